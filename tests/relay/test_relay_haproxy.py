"""The relay's PROXY protocol against a real HAProxy, both ways, and against bad peers.

a) HAProxy ``send-proxy``/``send-proxy-v2`` into ``sockit relay
   tcp-listen:...,proxy-protocol=vN``: the relayed bytes arrive byte-exact at a plain
   backend (the header is consumed, never forwarded), and an ``exec:``/``sh:`` target
   sees the *original* client (HAProxy's client) in ``SOCKIT_REMOTE_ADDR/PORT`` and the
   address that client connected to in ``SOCKIT_LOCAL_ADDR/PORT``.
b) ``sockit relay tcp-listen:... tcp:HAPROXY,proxy-protocol=vN`` into an HAProxy
   frontend with ``accept-proxy`` that forwards with ``send-proxy``/``send-proxy-v2``
   to a backend parsing the header with :func:`sockit.proto.proxy.parse_proxy_header`:
   the backend sees the client that connected to sockit.
c) A listening ``proxy-protocol=v2`` endpoint whose peer sends garbage, a bad header,
   EOF, or nothing: that connection is reset and never reaches the destination; the
   relay keeps serving (no HAProxy needed).

The client binds 127.0.0.3 so that its address cannot be confused with HAProxy's or
the relay's (127.0.0.1). The HAProxy tests skip only if haproxy is not installed
(they fail instead in CI: see tests/serve/haproxy.py).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_relay_endpoints import (
    TIMEOUT,
    RelayThread,
    accept,
    connect,
    expect_reset,
    recv_until_eof,
    send_expecting_reset,
    sender,
    tcp_server,
)

from sockit.addr import SocketAddress
from sockit.proto.proxy import encode_proxy_v1, encode_proxy_v2, parse_proxy_header
from sockit.relay.legs import DEFAULT_PROXY_HEADER_TIMEOUT

# The HAProxy fixture lives with the serve tests (one helper module, no second conftest).
_SERVE_TESTS = str(Path(__file__).resolve().parent.parent / "serve")
if _SERVE_TESTS not in sys.path:
    sys.path.insert(0, _SERVE_TESTS)
from haproxy import HAProxyFactory, haproxy_fixture  # noqa: E402, F401 - registers it

if TYPE_CHECKING:
    from collections.abc import Callable

CLIENT_HOST = "127.0.0.3"
"""The original client's address: neither HAProxy's nor the relay's."""

SEND_PROXY = {"v1": "send-proxy", "v2": "send-proxy-v2"}


def haproxy_config(
    frontend_port: int, server_port: int, *, bind: str = "", server: str = ""
) -> str:
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
    bind 127.0.0.1:{frontend_port} {bind}
    default_backend back

backend back
    server app 127.0.0.1:{server_port} {server}
"""


def client_connect(port: int) -> socket.socket:
    """A connection to 127.0.0.1:port from CLIENT_HOST."""
    return socket.create_connection(
        ("127.0.0.1", port), timeout=TIMEOUT, source_address=(CLIENT_HOST, 0)
    )


def run_in_thread(function: Callable[[], None]) -> threading.Thread:
    """Run ``function`` in a thread; its exception is re-raised by :func:`join`."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, name="backend")
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join(thread: threading.Thread) -> None:
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"{thread.name} did not finish"
    errors: list[BaseException] = thread.errors  # type: ignore[attr-defined]
    if errors:
        raise errors[0]


# --- a) HAProxy sends the header, sockit reads it ------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_haproxy_into_relay_bytes_arrive_byte_exact(
    haproxy: HAProxyFactory,
    version: str,
    splice: bool,
) -> None:
    request = b"GET / HTTP/1.0\r\n" + bytes(range(256)) * 2048  # 512 KiB, every byte value
    reply = bytes(reversed(range(256))) * 1024
    received: list[bytes] = []
    with tcp_server() as backend:
        backend_port = backend.getsockname()[1]

        def serve() -> None:
            conn, peer = accept(backend)
            with conn:
                assert peer[0] == "127.0.0.1"  # the relay's own connection
                received.append(recv_until_eof(conn))
                conn.sendall(reply)

        with RelayThread(
            f"tcp-listen:127.0.0.1:0,proxy-protocol={version}",
            f"tcp:127.0.0.1:{backend_port}",
            splice=splice,
        ) as relay:
            frontend_port = haproxy.free_port()
            haproxy(haproxy_config(frontend_port, relay.port, server=SEND_PROXY[version]))
            thread = run_in_thread(serve)
            try:
                with client_connect(frontend_port) as client:
                    writer = sender(client, request)
                    try:
                        answer = recv_until_eof(client)
                    finally:
                        writer.join(TIMEOUT)
            finally:
                join(thread)
            relay.wait_until(lambda r: r.stats.clean == 1, "a clean relayed connection")
    # The header was consumed by the relay: the backend got exactly the client's bytes.
    assert received == [request]
    assert answer == reply


ENVIRONMENT_NAMES = ("REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("target", "parse"),
    [
        ("exec:env", lambda text: dict(line.partition("=")[::2] for line in text.splitlines())),
        (
            (
                "sh:echo $SOCKIT_REMOTE_ADDR $SOCKIT_REMOTE_PORT $SOCKIT_LOCAL_ADDR "
                "$SOCKIT_LOCAL_PORT $NCAT_REMOTE_ADDR $NCAT_REMOTE_PORT"
            ),
            lambda text: dict(
                zip(
                    [f"SOCKIT_{name}" for name in ENVIRONMENT_NAMES]
                    + ["NCAT_REMOTE_ADDR", "NCAT_REMOTE_PORT"],
                    text.split(),
                    strict=True,
                )
            ),
        ),
    ],
    ids=["exec", "sh"],
)
def test_haproxy_into_relay_child_sees_the_original_client(
    haproxy: HAProxyFactory,
    version: str,
    target: str,
    parse: Callable[[str], dict[str, str]],
) -> None:
    with RelayThread(f"tcp-listen:127.0.0.1:0,proxy-protocol={version}", target) as relay:
        frontend_port = haproxy.free_port()
        haproxy(haproxy_config(frontend_port, relay.port, server=SEND_PROXY[version]))
        with client_connect(frontend_port) as client:
            client_port = client.getsockname()[1]
            # The child prints and exits without reading: its output and EOF come first.
            # (Not a half-close of ours first: HAProxy 2.6 sometimes aborts the server
            # side of a stream whose client sent FIN before any byte came back.)
            variables = parse(recv_until_eof(client).decode())
    expected = {
        "REMOTE_ADDR": CLIENT_HOST,
        "REMOTE_PORT": str(client_port),
        "LOCAL_ADDR": "127.0.0.1",
        "LOCAL_PORT": str(frontend_port),
    }
    assert {name: variables.get(f"SOCKIT_{name}") for name in ENVIRONMENT_NAMES} == expected
    assert variables.get("NCAT_REMOTE_ADDR") == CLIENT_HOST
    assert variables.get("NCAT_REMOTE_PORT") == str(client_port)


# --- b) sockit sends the header, HAProxy reads it ------------------------------------------


@pytest.mark.parametrize(
    ("version", "haproxy_sends"),
    [("v1", "send-proxy"), ("v2", "send-proxy-v2"), ("v2", "send-proxy"), ("v1", "send-proxy-v2")],
    ids=["v1-v1", "v2-v2", "v2-v1", "v1-v2"],
)
def test_relay_into_haproxy_accept_proxy_names_the_original_client(
    haproxy: HAProxyFactory, version: str, haproxy_sends: str
) -> None:
    seen: list[bytes] = []
    with tcp_server() as backend:
        backend_port = backend.getsockname()[1]
        frontend_port = haproxy.free_port()
        haproxy(
            haproxy_config(frontend_port, backend_port, bind="accept-proxy", server=haproxy_sends)
        )

        def serve() -> None:
            conn, _ = accept(backend)
            with conn:
                seen.append(recv_until_eof(conn))
                conn.sendall(b"ok\n")

        with RelayThread(
            "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{frontend_port},proxy-protocol={version}"
        ) as relay:
            thread = run_in_thread(serve)
            try:
                with client_connect(relay.port) as client:
                    client_port = client.getsockname()[1]
                    client.sendall(b"payload\n")
                    client.shutdown(socket.SHUT_WR)
                    answer = recv_until_eof(client)
            finally:
                join(thread)
            relay_port = relay.port
    assert answer == b"ok\n"
    [data] = seen
    header = parse_proxy_header(data)
    assert header is not None, data[:120]
    assert header.command == "PROXY"
    # HAProxy took the addresses from sockit's header and passed them on: the backend
    # sees the client that connected to sockit, and the address it connected to.
    assert header.source == SocketAddress(socket.AF_INET, CLIENT_HOST, client_port)
    assert header.destination == SocketAddress(socket.AF_INET, "127.0.0.1", relay_port)
    assert data[header.consumed :] == b"payload\n"


# --- c) a listening proxy-protocol endpoint and peers that are not proxies ----------------

V2_SIGNATURE = b"\r\n\r\n\0\r\nQUIT\n"


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello's start
        b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 127.0.0.1 127.0.0.1 1\r\n",  # a port missing
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),  # version nibble 3
        V2_SIGNATURE + b"\x21\x99\x00\x00",  # an unknown family/protocol byte
        b"",  # EOF before any header
    ],
    ids=["http", "tls", "v1-bad-address", "v1-short", "v2-bad-version", "v2-bad-family", "eof"],
)
def test_a_peer_without_a_valid_header_is_reset_and_the_relay_keeps_serving(
    first_bytes: bytes,
) -> None:
    with tcp_server() as backend:
        backend_port = backend.getsockname()[1]
        with RelayThread(
            "tcp-listen:127.0.0.1:0,proxy-protocol=v2", f"tcp:127.0.0.1:{backend_port}"
        ) as relay:
            with connect(relay.port) as bad:
                send_expecting_reset(bad, first_bytes, eof=True)
            relay.wait_until(lambda r: r.stats.failed == 1, "the bad connection failed")
            # Nothing reached the destination for it.
            backend.setblocking(False)
            with pytest.raises(BlockingIOError):
                backend.accept()
            backend.settimeout(TIMEOUT)
            assert_serves_with_a_valid_header(relay.port, backend, version=2)


def test_a_silent_peer_is_reset_after_the_header_timeout() -> None:
    with tcp_server() as backend:
        backend_port = backend.getsockname()[1]
        with RelayThread(
            "tcp-listen:127.0.0.1:0,proxy-protocol=v2", f"tcp:127.0.0.1:{backend_port}"
        ) as relay:
            with connect(relay.port) as silent:
                started = time.monotonic()
                # Meanwhile, others are served (the wait blocks nothing).
                assert_serves_with_a_valid_header(relay.port, backend, version=1)
                expect_reset(silent)
                elapsed = time.monotonic() - started
            assert DEFAULT_PROXY_HEADER_TIMEOUT - 0.5 <= elapsed < DEFAULT_PROXY_HEADER_TIMEOUT + 5
            relay.wait_until(lambda r: r.stats.failed == 1, "the silent connection failed")


def assert_serves_with_a_valid_header(
    relay_port: int, backend: socket.socket, version: int
) -> None:
    """A client with a well-formed header (sent in two pieces) is relayed byte-exact."""
    source = SocketAddress(socket.AF_INET, "192.0.2.7", 4242)
    destination = SocketAddress(socket.AF_INET, "127.0.0.1", relay_port)
    encode = encode_proxy_v1 if version == 1 else encode_proxy_v2
    header = encode(source, destination)
    payload = b"after the header\n" * 100
    with connect(relay_port) as client:
        client.sendall(header[:7])
        client.sendall(header[7:] + payload)
        client.shutdown(socket.SHUT_WR)
        conn, _ = accept(backend)
        with conn:
            assert recv_until_eof(conn) == payload
            conn.sendall(b"done")
        assert recv_until_eof(client) == b"done"
