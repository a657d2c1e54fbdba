"""sockit.serve: the server contracts in one process, over real loopback sockets.

Modes, handler failures, max_connections, allow/deny, idle_timeout, PROXY protocol,
UNIX listeners, the start/shutdown life cycle and signal handlers in the main thread.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.addr import SocketAddress
from sockit.proto.proxy import encode_proxy_v1, encode_proxy_v2
from sockit.serve import MODES, Server, serve

if TYPE_CHECKING:
    from sockit import SocketStream

SYNC_MODES = ["sequential", "thread", "fork"]
assert set(SYNC_MODES) < set(MODES)


def echo(stream: SocketStream) -> None:
    while data := stream.recv(65536):
        stream.sendall(data)


def read_to_eof(client: SocketStream, timeout: float = 5.0) -> bytes:
    chunks = []
    deadline = time.monotonic() + timeout
    while chunk := client.recv(65536, timeout=max(0.0, deadline - time.monotonic())):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(
    port: int, payload: bytes = b"ping", host: str = "127.0.0.1", source: str | None = None
) -> bytes:
    """Send payload, half-close, return everything the server sent until EOF."""
    local = None if source is None else (source, 0)
    with sockit.connect(host, port, timeout=5, local_address=local) as client:
        client.sendall(payload)
        client.send_eof()
        return read_to_eof(client)


def exchange_or_reset(
    port: int, payload: bytes = b"ping", host: str = "127.0.0.1", source: str | None = None
) -> bytes:
    """Like exchange(), for a server that may close before reading: b"" on a reset."""
    try:
        return exchange(port, payload, host, source)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")


# --- modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_every_mode_echoes_and_counts(mode: str) -> None:
    with serve(echo, 0, "127.0.0.1", mode=mode) as server:  # type: ignore[call-overload]
        assert exchange(server.port, b"hello " * 1000) == b"hello " * 1000
        assert exchange(server.port, b"again") == b"again"
    stats = server.stats
    assert stats.accepted == 2
    assert stats.active == 0
    assert (stats.refused, stats.errors) == (0, 0)


def test_thread_mode_names_its_threads_and_does_not_daemonize_them() -> None:
    seen: list[tuple[str, bool]] = []

    def record(stream: SocketStream) -> None:
        thread = threading.current_thread()
        seen.append((thread.name, thread.daemon))
        read_to_eof(stream)  # closing with unread input would send an RST
        stream.sendall(b"ok")

    with serve(record, 0, "127.0.0.1") as server:
        assert exchange(server.port) == b"ok"
        assert exchange(server.port) == b"ok"
    assert seen == [("sockit-conn-1", False), ("sockit-conn-2", False)]


def test_sequential_mode_handles_one_connection_at_a_time() -> None:
    release = threading.Event()

    def hold(stream: SocketStream) -> None:
        stream.sendall(b"in")
        release.wait(10)

    with serve(hold, 0, "127.0.0.1", mode="sequential") as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as first:
            assert first.recv_exactly(2) == b"in"
            with sockit.connect("127.0.0.1", server.port, timeout=5) as second:
                # Queued in the backlog, not handled, while the first one runs.
                with pytest.raises(TimeoutError):
                    second.recv(2, timeout=0.3)
                release.set()
                assert second.recv_exactly(2) == b"in"


def test_addresses_port_and_repr_are_known_before_serving() -> None:
    server = serve(echo, 0, "127.0.0.1")
    try:
        (address,) = server.addresses
        assert address.host == "127.0.0.1"
        assert address.port == server.port > 0
        assert server.mode == "thread"
        assert server.workers == 1
        assert server.worker_pids == []
        assert f"127.0.0.1:{server.port}" in repr(server)
        assert server.active_connections == 0
    finally:
        server.shutdown()


def test_a_server_never_started_closes_its_listener_on_shutdown() -> None:
    server = serve(echo, 0, "127.0.0.1")
    port = server.port
    server.shutdown()
    server.shutdown()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        sockit.connect("127.0.0.1", port, timeout=5)
    with pytest.raises(RuntimeError):
        server.serve_forever()


def test_shutdown_is_idempotent_and_a_server_runs_once() -> None:
    server = serve(echo, 0, "127.0.0.1")
    server.start()
    with pytest.raises(RuntimeError):
        server.start()
    assert exchange(server.port) == b"ping"
    server.shutdown()
    server.shutdown()
    with pytest.raises(RuntimeError):
        server.serve_forever()


# --- handler failures -------------------------------------------------------------------


def fail_on_boom(stream: SocketStream) -> None:
    if stream.recv_line(timeout=5) == b"boom":
        raise RuntimeError("boom from the handler")
    stream.sendall(b"fine")


@pytest.mark.parametrize("mode", ["sequential", "thread"])
def test_a_handler_exception_is_logged_with_the_4_tuple_and_ends_only_that_connection(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sockit.serve")
    with serve(fail_on_boom, 0, "127.0.0.1", mode=mode) as server:  # type: ignore[call-overload]
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client_address = client.local_address
            client.sendall(b"boom\n")
            assert read_to_eof(client) == b""  # the server closed the stream
        assert exchange(server.port, b"hello\n") == b"fine"
        assert exchange(server.port, b"again\n") == b"fine"
    failures = [r for r in caplog.records if r.name == "sockit.serve" and r.exc_info]
    assert len(failures) == 1
    message = failures[0].getMessage()
    assert f"{client_address} -> 127.0.0.1:{server.port}" in message
    assert failures[0].exc_info is not None
    assert "boom from the handler" in str(failures[0].exc_info[1])
    assert server.stats.errors == 1
    assert server.stats.accepted == 3


def test_a_handler_exception_in_a_fork_child_is_counted_and_ends_only_that_connection() -> None:
    with serve(fail_on_boom, 0, "127.0.0.1", mode="fork") as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"boom\n")
            assert read_to_eof(client) == b""
        assert exchange(server.port, b"hello\n") == b"fine"
    # The child logs (to its stderr) and reports through its exit status.
    assert server.stats.errors == 1
    assert server.stats.accepted == 2


# --- max_connections --------------------------------------------------------------------


def announce_and_wait(stream: SocketStream) -> None:
    stream.sendall(b"ready")
    stream.recv(1, timeout=10)


@pytest.mark.parametrize("mode", ["thread", "fork"])
def test_max_connections_closes_what_it_refuses_cleanly_and_counts_it(mode: str) -> None:
    with serve(announce_and_wait, 0, "127.0.0.1", mode=mode, max_connections=2) as server:  # type: ignore[call-overload]
        first = sockit.connect("127.0.0.1", server.port, timeout=5)
        second = sockit.connect("127.0.0.1", server.port, timeout=5)
        try:
            assert first.recv_exactly(5) == b"ready"
            assert second.recv_exactly(5) == b"ready"
            assert server.active_connections == 2
            with sockit.connect("127.0.0.1", server.port, timeout=5) as third:
                # A clean close (FIN: recv returns b""), not a reset, and no handler.
                assert third.recv(5, timeout=5) == b""
            assert server.stats.refused == 1
        finally:
            first.close()
            second.close()
        # Once the two are gone the server admits new connections again.
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        with sockit.connect("127.0.0.1", server.port, timeout=5) as fourth:
            assert fourth.recv_exactly(5) == b"ready"
    assert server.stats.accepted == 3


# --- access policy ----------------------------------------------------------------------


def test_allow_list_admits_listed_peers() -> None:
    with serve(echo, 0, "127.0.0.1", allow=["127.0.0.0/8"]) as server:
        assert exchange(server.port) == b"ping"
    assert (server.stats.accepted, server.stats.denied) == (1, 0)


def test_denied_peers_are_closed_at_once_and_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sockit.serve")
    with serve(echo, 0, "127.0.0.1", deny=["127.0.0.1/32"]) as server:
        assert exchange_or_reset(server.port) == b""
    assert (server.stats.accepted, server.stats.refused, server.stats.denied) == (0, 1, 1)
    refusals = [r for r in caplog.records if "access policy" in r.getMessage()]
    assert [r.levelno for r in refusals] == [logging.DEBUG]


def test_an_allow_list_without_the_peer_refuses_it() -> None:
    with serve(echo, 0, "127.0.0.1", allow=["10.0.0.0/8", "::1"]) as server:
        assert exchange_or_reset(server.port) == b""
    assert server.stats.denied == 1


@needs_ipv6
def test_ipv4_mapped_peers_are_matched_as_ipv4() -> None:
    # A dual-stack IPv6 socket (IPV6_V6ONLY off) sees an IPv4 client as ::ffff:127.0.0.1;
    # the policy must see 127.0.0.1, so an IPv4 deny entry applies to it.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.listen()
    listener = sockit.SocketListener([sock])
    seen: list[SocketAddress] = []

    def report(stream: SocketStream) -> None:
        seen.append(stream.remote_address)
        read_to_eof(stream)
        stream.sendall(b"in")

    with serve(report, listener=listener, deny=["127.0.0.2"]) as server:
        assert exchange(server.port, source="127.0.0.1") == b"in"
        assert exchange_or_reset(server.port, source="127.0.0.2") == b""
    assert [str(address.host) for address in seen] == ["127.0.0.1"]
    assert server.stats.denied == 1


# --- idle timeout -----------------------------------------------------------------------


def test_idle_timeout_is_the_streams_default_timeout_and_ends_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sockit.serve")
    timeouts: list[float | None] = []

    def handler(stream: SocketStream) -> None:
        timeouts.append(stream.timeout)
        echo(stream)

    with serve(handler, 0, "127.0.0.1", idle_timeout=0.3) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"x")
            assert client.recv_exactly(1) == b"x"
            started = time.monotonic()
            assert read_to_eof(client) == b""  # the server gave up on the silent peer
            assert 0.2 < time.monotonic() - started < 3
    assert timeouts == [0.3]
    assert server.stats.errors == 0
    assert any("idle_timeout=0.3" in r.getMessage() for r in caplog.records)


# --- shutdown ---------------------------------------------------------------------------


def refused(port: int) -> bool:
    """Whether a connect to the port is refused now (a probe that raced the closing
    listener into its queue is reset: not refused yet)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False
    return False


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_shutdown_stops_accepting_at_once_and_drains_active_handlers(mode: str) -> None:
    server = serve(echo, 0, "127.0.0.1", mode=mode, drain_timeout=10)  # type: ignore[call-overload]
    server.start()
    client = sockit.connect("127.0.0.1", server.port, timeout=5)
    try:
        client.sendall(b"before")
        assert client.recv_exactly(6) == b"before"
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        # shutdown() closes the listener before it waits; the active connection goes on.
        deadline = time.monotonic() + 2
        while not refused(server.port):
            assert time.monotonic() < deadline, "still accepting after shutdown()"
        client.sendall(b"during the drain")
        assert client.recv_exactly(16) == b"during the drain"
        assert stopper.is_alive()
        client.send_eof()
        assert read_to_eof(client) == b""
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        client.close()
        server.shutdown()


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_handlers_still_running_after_the_drain_timeout_are_aborted_with_rst(mode: str) -> None:
    with serve(announce_and_wait, 0, "127.0.0.1", mode=mode) as server:  # type: ignore[call-overload]
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            assert client.recv_exactly(5) == b"ready"
            started = time.monotonic()
            server.shutdown(drain_timeout=0.2)
            elapsed = time.monotonic() - started
            with pytest.raises(ConnectionResetError):
                client.recv(1, timeout=5)
    assert elapsed < 3
    assert server.stats.errors == 0  # the abort is not the handler's failure


def test_shutdown_from_inside_a_handler_requests_it_without_waiting_for_itself() -> None:
    holder: list[Server] = []

    def stop_server(stream: SocketStream) -> None:
        holder[0].shutdown()
        read_to_eof(stream)
        stream.sendall(b"stopping")

    server = serve(stop_server, 0, "127.0.0.1")
    holder.append(server)
    server.start()
    assert exchange(server.port) == b"stopping"
    server.shutdown()  # waits for the shutdown the handler requested
    assert refused(server.port)


def test_serve_forever_in_the_main_thread_installs_and_restores_signal_handlers() -> None:
    def original(signum: int, frame: object) -> None:
        del signum, frame

    previous_term = signal.signal(signal.SIGTERM, original)
    previous_int = signal.getsignal(signal.SIGINT)
    server = serve(echo, 0, "127.0.0.1")
    observed: list[object] = []
    outcome: list[bytes] = []

    def client() -> None:
        try:
            outcome.append(exchange(server.port))
            observed.append(signal.getsignal(signal.SIGTERM))
        finally:
            server.shutdown()

    helper = threading.Thread(target=client)
    try:
        helper.start()
        server.serve_forever()
        helper.join(10)
        assert outcome == [b"ping"]
        assert len(observed) == 1
        assert observed[0] is not original  # ours while serving
        assert signal.getsignal(signal.SIGTERM) is original
        assert signal.getsignal(signal.SIGINT) is previous_int
    finally:
        server.shutdown()
        signal.signal(signal.SIGTERM, previous_term)


def test_first_sigterm_drains_and_a_second_one_aborts() -> None:
    server = serve(announce_and_wait, 0, "127.0.0.1", drain_timeout=30)
    result: dict[str, object] = {}
    ready = threading.Event()

    def client() -> None:
        try:
            with sockit.connect("127.0.0.1", server.port, timeout=5) as conn:
                assert conn.recv_exactly(5) == b"ready"
                ready.set()
                # Only SIGTERM while our handler is installed (else it kills pytest).
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                    result["error"] = "no handler installed"
                    return
                os.kill(os.getpid(), signal.SIGTERM)
                deadline = time.monotonic() + 2
                while not refused(server.port):
                    if time.monotonic() > deadline:
                        result["error"] = "still accepting after the first SIGTERM"
                        return
                # Draining: the connection is still up.
                try:
                    conn.recv(1, timeout=0.3)
                except TimeoutError:
                    result["drained"] = True
                started = time.monotonic()
                os.kill(os.getpid(), signal.SIGTERM)
                try:
                    conn.recv(1, timeout=5)
                except ConnectionResetError:
                    result["reset_after"] = time.monotonic() - started
        finally:
            ready.set()
            if "reset_after" not in result:
                server.shutdown(drain_timeout=0)

    helper = threading.Thread(target=client)
    helper.start()
    try:
        server.serve_forever()
    finally:
        helper.join(10)
        server.shutdown()
    assert "error" not in result, result
    assert result.get("drained") is True
    reset_after = result.get("reset_after")
    assert isinstance(reset_after, float)
    assert reset_after < 2


# --- PROXY protocol ---------------------------------------------------------------------


def report_addresses(stream: SocketStream) -> None:
    stream.sendall(f"{stream.remote_address}|{stream.local_address}\n".encode())
    echo(stream)


def test_proxy_protocol_v1_and_v2_replace_the_addresses_and_keep_the_payload() -> None:
    source = SocketAddress(socket.AF_INET, "192.0.2.7", 40000)
    destination = SocketAddress(socket.AF_INET, "198.51.100.1", 443)
    source6 = SocketAddress(socket.AF_INET6, "2001:db8::7", 40001)
    destination6 = SocketAddress(socket.AF_INET6, "2001:db8::1", 8443)
    with serve(report_addresses, 0, "127.0.0.1", proxy_protocol=True) as server:
        reply = exchange(server.port, encode_proxy_v1(source, destination) + b"payload")
        assert reply == b"192.0.2.7:40000|198.51.100.1:443\npayload"
        reply = exchange(server.port, encode_proxy_v2(source6, destination6) + b"more")
        assert reply == b"[2001:db8::7]:40001|[2001:db8::1]:8443\nmore"
        # LOCAL (a health check) keeps the real addresses.
        local = encode_proxy_v2(None, None, command="LOCAL")
        reply = exchange(server.port, local + b"x")
        assert reply.startswith(b"127.0.0.1:")
        assert reply.endswith(f"|127.0.0.1:{server.port}\nx".encode())
    assert server.stats.accepted == 3


@pytest.mark.parametrize("mode", ["thread", "fork"])
def test_proxy_protocol_refuses_a_peer_without_a_header(mode: str) -> None:
    with serve(report_addresses, 0, "127.0.0.1", mode=mode, proxy_protocol=True) as server:  # type: ignore[call-overload]
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                reply = client.recv(100, timeout=5)
            except ConnectionResetError:
                reply = b""
            assert reply == b""
        assert exchange(server.port, encode_proxy_v1(None, None) + b"ok").endswith(b"ok")
    assert (server.stats.accepted, server.stats.errors) == (2, 1)


# --- UNIX sockets -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["thread", "fork"])
def test_a_unix_listener_is_served_and_its_file_removed(mode: str, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    listener = sockit.listen_unix(path)
    with serve(echo, listener=listener, mode=mode) as server:  # type: ignore[call-overload]
        assert str(server.addresses[0]) == f"unix:{path}"
        with pytest.raises(AttributeError):
            _ = server.port
        with sockit.connect_unix(path, timeout=5) as client:
            client.sendall(b"over unix")
            client.send_eof()
            assert read_to_eof(client) == b"over unix"
    assert not Path(path).exists()


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "threads"},
        {"workers": 0},
        {"max_connections": 0},
        {"idle_timeout": 0},
        {"drain_timeout": -1},
        {"allow": "127.0.0.1"},
        {"deny": ["not an address"]},
    ],
)
def test_bad_arguments_are_refused_before_binding(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        serve(echo, 0, "127.0.0.1", **kwargs)  # type: ignore[call-overload]


def test_listener_and_port_are_exclusive() -> None:
    listener = sockit.listen(0, "127.0.0.1")
    try:
        with pytest.raises(ValueError, match="listener"):
            serve(echo, 8080, listener=listener)
    finally:
        listener.close()


def test_binding_errors_are_raised_and_leave_nothing_open() -> None:
    with sockit.listen(0, "127.0.0.1") as taken:
        with pytest.raises(OSError) as raised:
            serve(echo, taken.port, "127.0.0.1")
        assert raised.value.errno == errno.EADDRINUSE
