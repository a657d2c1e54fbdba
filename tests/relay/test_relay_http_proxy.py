"""The HTTP proxy server (``sockit -l --proxy-type http``) over real loopback sockets.

* CONNECT: a tunnel byte-exact both ways with half-close (bytes sent right behind the
  request head arrive first), ncat's exact ``200`` answer, a target's reset reaching
  the client as a reset.
* Forwarding: the origin sees the origin-form request line, the URI's ``Host``, no
  hop-by-hop fields and no ``Proxy-Authorization``, the body, and ``Connection:
  close``; the response comes back byte for byte.
* Basic authentication: ``407`` with ncat's challenge without or with wrong
  credentials, the tunnel with the right ones.
* Limits and errors: a long header line (``431``), request line (``414``), too many
  fields (``431``), a slow head (``408`` after ``header_timeout``), a refused target
  (``502``), malformed requests (``400``, ``505``). The server keeps serving after each.
* ``max_conns``, cancellation aborting every connection, IPv4+IPv6 on one port.
* Python's own clients through the proxy: ``urllib`` forwarding (credentials in the
  proxy URL) and ``http.client`` tunnelling (``set_tunnel``).

Every test runs on asyncio and uvloop (the ``run`` fixture); the blocking Python clients
run in the loop's default executor, which the fixture joins. Every wait is bounded by
``TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import socket
import subprocess
import urllib.request
from typing import TYPE_CHECKING

import pytest

from sockit.relay.http_proxy import HTTPProxyServer, _parse_authority, _Reject

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from conftest import Runner

TIMEOUT = 10.0
"""Seconds any single wait may take before the test fails (a loaded 2-core machine)."""

POLL_SECONDS = 0.01
"""Step of the bounded polls for the server's counters (no event announces them)."""

CONNECTED = b"HTTP/1.0 200 OK\r\n\r\n"
CHALLENGE = (
    b'HTTP/1.0 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="Ncat"\r\n\r\n'
)
USER, PASSWORD = "alice", "s3cr\u00e9t:x"
GOOD_AUTH = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())


def status(code: int, reason: str) -> bytes:
    return f"HTTP/1.0 {code} {reason}\r\n\r\n".encode()


# --- helpers: sockets on the running loop -------------------------------------------------


async def open_client(port: int, host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def send(sock: socket.socket, data: bytes) -> None:
    async with asyncio.timeout(TIMEOUT):
        await asyncio.get_running_loop().sock_sendall(sock, data)


async def recv_until_eof(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Everything until EOF (a reset raises ``ConnectionResetError``)."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(TIMEOUT):
        while size <= limit:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    raise AssertionError(f"more than {limit} bytes without EOF")


async def recv_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(TIMEOUT):
        while len(data) < n:
            chunk = await loop.sock_recv(sock, n - len(data))
            if not chunk:
                raise AssertionError(f"EOF after {data!r}, expected {n} bytes")
            data += chunk
    return data


async def recv_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The bytes up to and including the first blank line, and any bytes after it."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(TIMEOUT):
        while b"\r\n\r\n" not in data:
            assert len(data) < 65536, data
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise AssertionError(f"EOF inside a head: {data!r}")
            data += chunk
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


async def ask(port: int, request: bytes, *, half_close: bool = False) -> bytes:
    """Send ``request`` to the proxy and return its whole answer (up to EOF)."""
    sock = await open_client(port)
    with sock:
        await send(sock, request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return await recv_until_eof(sock)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (bounded by TIMEOUT): the server's counters have no event."""
    for _ in range(int(TIMEOUT / POLL_SECONDS)):
        if condition():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError("condition not reached in time")


def listening_socket() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def proxy_server(**options: object) -> AsyncIterator[tuple[HTTPProxyServer, int]]:
    """An HTTPProxyServer on 127.0.0.1, served until the block ends (then cancelled)."""
    server = HTTPProxyServer("127.0.0.1", 0, **options)  # type: ignore[arg-type]
    addresses = await server.start()
    task = asyncio.create_task(server.serve_forever(), name="proxy")
    try:
        yield server, addresses[0].port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert server.addresses == []


@contextlib.asynccontextmanager
async def origin(
    handler: Callable[[socket.socket], object], *, connections: int = 1
) -> AsyncIterator[int]:
    """A loopback server running ``await handler(conn)`` for up to ``connections``
    connections; the block gets its port. Every connection is closed at the end."""
    loop = asyncio.get_running_loop()
    server = listening_socket()
    port: int = server.getsockname()[1]

    async def serve() -> None:
        for _ in range(connections):
            conn, _address = await loop.sock_accept(server)
            with conn:
                conn.setblocking(False)
                await handler(conn)  # type: ignore[misc]

    task = asyncio.create_task(serve(), name="origin")
    try:
        yield port
        async with asyncio.timeout(TIMEOUT):
            await task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()


async def echo_then_digest(conn: socket.socket) -> None:
    """Echo every byte as it arrives; at EOF send the SHA-256 of all of it, then EOF."""
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    while True:
        chunk = await loop.sock_recv(conn, 65536)
        if not chunk:
            break
        digest.update(chunk)
        await loop.sock_sendall(conn, chunk)
    await loop.sock_sendall(conn, digest.digest())
    conn.shutdown(socket.SHUT_WR)


async def connect_through(port: int, target_port: int, auth: bytes | None = None) -> socket.socket:
    """A client socket with an established CONNECT tunnel to 127.0.0.1:target_port."""
    head = f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    if auth is not None:
        head += b"Proxy-Authorization: " + auth + b"\r\n"
    sock = await open_client(port)
    try:
        await send(sock, head + b"\r\n")
        assert await recv_exactly(sock, len(CONNECTED)) == CONNECTED
    except BaseException:
        sock.close()
        raise
    return sock


async def check_tunnel(port: int, auth: bytes | None = None) -> None:
    """A fresh CONNECT through the proxy echoes a message: the server still serves."""
    async with origin(echo_then_digest) as target_port:
        sock = await connect_through(port, target_port, auth)
        with sock:
            await send(sock, b"still serving")
            sock.shutdown(socket.SHUT_WR)
            answer = await recv_until_eof(sock)
    assert answer == b"still serving" + hashlib.sha256(b"still serving").digest()


# --- CONNECT ------------------------------------------------------------------------------


def test_connect_tunnel_is_byte_exact_with_half_close(run: Runner) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    first = 1000  # sent in the same write as the request head

    async def main() -> None:
        async with proxy_server() as (server, port), origin(echo_then_digest) as target_port:
            client = await open_client(port)
            with client:
                head = f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\nHost: x\r\n\r\n"
                await send(client, head.encode() + payload[:first])

                async def upload() -> None:
                    await send(client, payload[first:])
                    client.shutdown(socket.SHUT_WR)

                uploading = asyncio.create_task(upload())
                answer_head, after = await recv_head(client)
                answer = after + await recv_until_eof(client)
                await uploading
            assert answer_head == CONNECTED
            assert len(answer) == len(payload) + 32
            assert answer[: len(payload)] == payload
            assert answer[len(payload) :] == hashlib.sha256(payload).digest()
            await until(lambda: server.stats.active == 0)
            assert server.stats.tunnels == 1
            assert server.stats.bytes_up == len(payload)
            assert server.stats.bytes_down == len(payload) + 32
            assert server.stats.errors == 0

    run(main)


def test_connect_target_reset_reaches_client_as_reset(run: Runner) -> None:
    async def reset_after_hello(conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert await loop.sock_recv(conn, 100) == b"hello"
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")

    async def main() -> None:
        async with proxy_server() as (server, port), origin(reset_after_hello) as target_port:
            client = await connect_through(port, target_port)
            with client:
                await send(client, b"hello")
                with pytest.raises(ConnectionResetError):
                    await recv_until_eof(client)
            await until(lambda: server.stats.active == 0)
            assert server.stats.errors == 1
            await check_tunnel(port)

    run(main)


# --- forwarding ---------------------------------------------------------------------------


def test_forwarding_rewrites_the_request_for_the_origin(run: Runner) -> None:
    seen: list[bytes] = []
    response = b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Origin: yes\r\n\r\nhello"

    async def http_origin(conn: socket.socket) -> None:
        head, body = await recv_head(conn)
        body += await recv_exactly(conn, 4 - len(body))
        seen.append(head + body)
        await asyncio.get_running_loop().sock_sendall(conn, response)

    async def main() -> None:
        async with (
            proxy_server(auth=(USER, PASSWORD)) as (server, port),
            origin(http_origin) as origin_port,
        ):
            request = (
                f"POST http://127.0.0.1:{origin_port}/a/b?c=1&d=%20 HTTP/1.1\r\n".encode()
                + b"Host: somewhere.else\r\n"
                + b"Proxy-Authorization: "
                + GOOD_AUTH
                + b"\r\n"
                + b"Proxy-Connection: keep-alive\r\n"
                + b"Connection: keep-alive, X-Hop\r\n"
                + b"X-Hop: secret\r\n"
                + b"Keep-Alive: 300\r\n"
                + b"TE: trailers\r\n"
                + b"X-Keep:   kept value \r\n"
                + b"Content-Length: 4\r\n\r\nbody"
            )
            answer = await ask(port, request)
            assert answer == response
            await until(lambda: server.stats.active == 0)
            assert server.stats.forwarded == 1
            assert server.stats.auth_failures == 0
        assert len(seen) == 1
        head, body = seen[0].split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /a/b?c=1&d=%20 HTTP/1.1"
        assert sorted(lines[1:]) == sorted(
            [
                f"Host: 127.0.0.1:{origin_port}".encode(),
                b"X-Keep: kept value",
                b"Content-Length: 4",
                b"Via: 1.1 sockit",
                b"Connection: close",
            ]
        )
        assert body == b"body"
        assert b"Proxy-Authorization" not in seen[0]
        assert b"secret" not in seen[0]

    run(main)


def test_forwarding_default_port_path_and_eof_delimited_response(run: Runner) -> None:
    """``http://host:port`` without a path asks for ``/``; a response delimited by the
    origin's EOF arrives whole, then EOF."""
    seen: list[bytes] = []
    body = os.urandom(200_000)

    async def http_origin(conn: socket.socket) -> None:
        head, _ = await recv_head(conn)
        seen.append(head)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(conn, b"HTTP/1.0 200 OK\r\n\r\n" + body)

    async def main() -> None:
        async with proxy_server() as (_server, port), origin(http_origin) as origin_port:
            answer = await ask(
                port, f"GET http://127.0.0.1:{origin_port}?x=1 HTTP/1.0\r\n\r\n".encode()
            )
            assert answer == b"HTTP/1.0 200 OK\r\n\r\n" + body
        assert seen[0].split(b"\r\n")[0] == b"GET /?x=1 HTTP/1.0"
        assert b"Via: 1.0 sockit\r\n" in seen[0]

    run(main)


# --- authentication -----------------------------------------------------------------------


def test_auth_required_wrong_and_right(run: Runner) -> None:
    async def main() -> None:
        async with proxy_server(auth=(USER, PASSWORD)) as (server, port):
            connect = b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"
            assert await ask(port, connect + b"\r\n") == CHALLENGE
            wrong = [
                b"Basic " + base64.b64encode(f"{USER}:wrong".encode()),
                b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()),
                b"Basic !!!not-base64",
                b"Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()),
                b"Basic",
            ]
            for credentials in wrong:
                answer = await ask(
                    port, connect + b"Proxy-Authorization: " + credentials + b"\r\n\r\n"
                )
                assert answer == CHALLENGE, credentials
            # Forwarding needs the credentials too.
            assert await ask(port, b"GET http://127.0.0.1:9/ HTTP/1.1\r\n\r\n") == CHALLENGE
            await check_tunnel(port, GOOD_AUTH)
            await check_tunnel(port, b"basic   " + GOOD_AUTH[6:])  # the scheme's case
            await until(lambda: server.stats.active == 0)
            assert server.stats.auth_failures == 1 + len(wrong) + 1
            assert server.stats.tunnels == 2

    run(main)


# --- limits and errors --------------------------------------------------------------------


def test_oversize_lines_and_heads_are_refused(run: Runner) -> None:
    async def main() -> None:
        async with proxy_server(max_header_bytes=1024) as (server, port):
            long_field = b"X-Long: " + b"a" * 2000 + b"\r\n"
            answer = await ask(port, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n" + long_field + b"\r\n")
            assert answer == status(431, "Request Header Fields Too Large")
            # Many short fields, together over the limit.
            fields = b"".join(b"X-F%d: %s\r\n" % (i, b"b" * 40) for i in range(30))
            answer = await ask(port, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n" + fields + b"\r\n")
            assert answer == status(431, "Request Header Fields Too Large")
            answer = await ask(port, b"GET http://127.0.0.1/" + b"p" * 2000 + b" HTTP/1.1\r\n")
            assert answer == status(414, "URI Too Long")
            # No line end at all: the limit holds without one (and without EOF).
            answer = await ask(port, b"G" * 5000)
            assert answer == status(414, "URI Too Long")
            await check_tunnel(port)
            await until(lambda: server.stats.active == 0)
            assert server.stats.errors == 4

        async with proxy_server() as (_server, port):
            fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(101))
            answer = await ask(port, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n" + fields + b"\r\n")
            assert answer == status(431, "Request Header Fields Too Large")
            await check_tunnel(port)

    run(main)


def test_slow_head_gets_408_after_header_timeout(run: Runner) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with proxy_server(header_timeout=0.3) as (server, port):
            for partial in (b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x", b""):
                started = loop.time()
                client = await open_client(port)
                with client:
                    await send(client, partial)
                    answer = await recv_until_eof(client)
                elapsed = loop.time() - started
                assert answer == status(408, "Request Timeout")
                assert 0.25 <= elapsed < 5.0, elapsed
            await check_tunnel(port)
            await until(lambda: server.stats.active == 0)
            assert server.stats.errors == 2

    run(main)


def test_refused_target_gets_502(run: Runner) -> None:
    async def main() -> None:
        async with proxy_server() as (server, port):
            target = closed_port()
            bad_gateway = status(502, "Bad Gateway")
            assert await ask(port, f"CONNECT 127.0.0.1:{target} HTTP/1.1\r\n\r\n".encode()) == (
                bad_gateway
            )
            forward = f"POST http://127.0.0.1:{target}/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            assert await ask(port, forward.encode()) == bad_gateway
            await check_tunnel(port)
            await until(lambda: server.stats.active == 0)
            assert server.stats.errors == 2

    run(main)


MALFORMED = [
    (b"hello\r\n\r\n", 400),
    (b"GET /relative HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400),
    (b"OPTIONS * HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1: HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT ::1:80 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT [::1:80 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT a/b:80 HTTP/1.1\r\n\r\n", 400),
    (b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
    (b"GET ftp://127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
    (b"GET http://user@127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
    (b"GET http:///path HTTP/1.1\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/2.0\r\n\r\n", 505),
    (b"GET http://127.0.0.1/ HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTX/1.1\r\n\r\n", 400),
    (b"GET  http://127.0.0.1/ HTTP/1.1\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nX : a\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
]


def test_malformed_requests_get_400(run: Runner) -> None:
    async def main() -> None:
        async with proxy_server() as (server, port):
            for request, expected in MALFORMED:
                reason = {400: "Bad Request", 505: "HTTP Version Not Supported"}[expected]
                assert await ask(port, request) == status(expected, reason), request
            # EOF in the middle of the head: answered (the client half-closed only).
            answer = await ask(port, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nX: a", half_close=True)
            assert answer == status(400, "Bad Request")
            # Connected and left without a byte: nothing to answer, not an error.
            client = await open_client(port)
            client.close()
            await check_tunnel(port)
            await until(lambda: server.stats.active == 0)
            assert server.stats.errors == len(MALFORMED) + 1
            assert server.stats.connections == len(MALFORMED) + 3

    run(main)


def test_bare_lf_line_ends_and_leading_blank_lines_are_accepted(run: Runner) -> None:
    async def main() -> None:
        async with proxy_server() as (_server, port), origin(echo_then_digest) as target:
            client = await open_client(port)
            with client:
                # Sent a byte at a time: the head may arrive in any number of pieces.
                head = f"\r\n\nCONNECT 127.0.0.1:{target} HTTP/1.1\nHost: x\n\n".encode()
                for index in range(len(head)):
                    await send(client, head[index : index + 1])
                assert await recv_exactly(client, len(CONNECTED)) == CONNECTED
                await send(client, b"lf")
                client.shutdown(socket.SHUT_WR)
                assert await recv_until_eof(client) == b"lf" + hashlib.sha256(b"lf").digest()

    run(main)


# --- serving ------------------------------------------------------------------------------


def test_max_conns_refuses_extra_connections(run: Runner) -> None:
    async def main() -> None:
        async with (
            proxy_server(max_conns=1) as (server, port),
            origin(echo_then_digest, connections=2) as target,
        ):
            first = await connect_through(port, target)
            with first:
                # Closed at once with a reset: seen at the connect, or at the first read.
                with contextlib.suppress(ConnectionResetError):
                    extra = await open_client(port)
                    with extra:
                        assert await recv_until_eof(extra) == b""
                await until(lambda: server.stats.refused == 1)
                await send(first, b"one")
                first.shutdown(socket.SHUT_WR)
                assert await recv_until_eof(first) == b"one" + hashlib.sha256(b"one").digest()
            await until(lambda: server.stats.active == 0)
            again = await connect_through(port, target)
            with again:
                again.shutdown(socket.SHUT_WR)
                assert await recv_until_eof(again) == hashlib.sha256(b"").digest()

    run(main)


def test_cancelling_serve_forever_aborts_every_connection(run: Runner) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        target_listener = listening_socket()
        with target_listener:
            server = HTTPProxyServer("127.0.0.1", 0)
            port = (await server.start())[0].port
            serving = asyncio.create_task(server.serve_forever())
            target_port = target_listener.getsockname()[1]
            tunnel = await open_client(port)
            waiting = await open_client(port)
            with tunnel, waiting:
                await send(tunnel, f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n\r\n".encode())
                async with asyncio.timeout(TIMEOUT):
                    target, _ = await loop.sock_accept(target_listener)
                with target:
                    target.setblocking(False)
                    assert await recv_exactly(tunnel, len(CONNECTED)) == CONNECTED
                    await send(waiting, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n")
                    await until(lambda: server.stats.active == 2)
                    serving.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await serving
                    for sock in (tunnel, waiting, target):
                        with pytest.raises(ConnectionResetError):
                            await recv_until_eof(sock)
            with pytest.raises(ConnectionRefusedError):
                (await open_client(port)).close()
            assert server.addresses == []
            await server.aclose()  # idempotent

    run(main)


def test_listening_without_host_binds_ipv4_and_ipv6_on_one_port(run: Runner) -> None:
    async def main() -> None:
        server = HTTPProxyServer(None, 0)
        try:
            addresses = await server.start()
            assert len({address.port for address in addresses}) == 1
            families = {address.family for address in addresses}
            assert socket.AF_INET in families
            serving = asyncio.create_task(server.serve_forever())
            hosts = ["127.0.0.1"] + (["::1"] if socket.AF_INET6 in families else [])
            for host in hosts:
                client = await open_client(addresses[0].port, host)
                with client:
                    await send(client, b"GET /x HTTP/1.1\r\n\r\n")
                    assert await recv_until_eof(client) == status(400, "Bad Request")
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving
        finally:
            await server.aclose()

    run(main)


def test_aclose_from_another_task_ends_serve_forever(run: Runner) -> None:
    async def main() -> None:
        server = HTTPProxyServer("127.0.0.1", 0)
        port = (await server.start())[0].port
        serving = asyncio.create_task(server.serve_forever())
        client = await open_client(port)
        with client:
            await send(client, b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n")
            await until(lambda: server.stats.active == 1)
            await server.aclose()
            async with asyncio.timeout(TIMEOUT):
                await serving
            with pytest.raises(ConnectionResetError):
                await recv_until_eof(client)
        assert server.addresses == []

    run(main)


@pytest.mark.parametrize(
    ("authority", "default", "expected"),
    [
        (b"127.0.0.1:8080", None, ("127.0.0.1", 8080)),
        (b"[::1]:443", None, ("::1", 443)),
        (b"[::1]", 80, ("::1", 80)),
        (b"example.test", 80, ("example.test", 80)),
        (b"example.test:", 80, ("example.test", 80)),
        (b"example.test:65535", None, ("example.test", 65535)),
        (b"example.test", None, None),
        (b"example.test:65536", None, None),
        (b"example.test:+80", None, None),
        (b"example.test:0080x", None, None),
        (b"[::1]x:80", None, None),
        (b":80", None, None),
        (b"[]:80", None, None),
        (b"h\xc3\xa9:80", None, None),
    ],
)
def test_authority_parsing(
    authority: bytes, default: int | None, expected: tuple[str, int] | None
) -> None:
    if expected is None:
        with pytest.raises(_Reject) as caught:
            _parse_authority(authority, default_port=default)
        assert caught.value.status == 400
    else:
        assert _parse_authority(authority, default_port=default) == expected


def test_constructor_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_header_bytes"):
        HTTPProxyServer("127.0.0.1", 0, max_header_bytes=10)
    with pytest.raises(ValueError, match="timeout"):
        HTTPProxyServer("127.0.0.1", 0, header_timeout=0)
    with pytest.raises(ValueError, match="max_conns"):
        HTTPProxyServer("127.0.0.1", 0, max_conns=0)


# --- Python's own HTTP clients through the proxy --------------------------------------------


async def small_http_origin(conn: socket.socket) -> None:
    """Answers ``GET /name`` with ``hello name``, then closes."""
    head, _ = await recv_head(conn)
    path = head.split(b"\r\n")[0].split(b" ")[1]
    body = b"hello " + path.lstrip(b"/")
    await asyncio.get_running_loop().sock_sendall(
        conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body),
    )


def test_urllib_and_http_client_through_the_proxy(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)

    def with_urllib(proxy_port: int, origin_port: int) -> bytes:
        proxy_url = f"http://{USER}:{PASSWORD}@127.0.0.1:{proxy_port}".replace("\u00e9", "%C3%A9")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url}))
        with opener.open(f"http://127.0.0.1:{origin_port}/urllib", timeout=TIMEOUT) as reply:
            data: bytes = reply.read()
            return data

    def with_http_client(proxy_port: int, origin_port: int) -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=TIMEOUT)
        try:
            conn.set_tunnel(
                "127.0.0.1", origin_port, headers={"Proxy-Authorization": GOOD_AUTH.decode()}
            )
            conn.request("GET", "/tunnel")
            return conn.getresponse().read()
        finally:
            conn.close()

    def refused_without_credentials(proxy_port: int, origin_port: int) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=TIMEOUT)
        try:
            conn.set_tunnel("127.0.0.1", origin_port)
            with pytest.raises(OSError, match="407") as caught:
                conn.request("GET", "/never")
            return str(caught.value)
        finally:
            conn.close()

    async def main() -> None:
        async with (
            proxy_server(auth=(USER, PASSWORD)) as (server, port),
            origin(small_http_origin, connections=2) as origin_port,
        ):
            assert await asyncio.to_thread(with_urllib, port, origin_port) == b"hello urllib"
            assert await asyncio.to_thread(with_http_client, port, origin_port) == (b"hello tunnel")
            await asyncio.to_thread(refused_without_credentials, port, origin_port)
            await until(lambda: server.stats.active == 0)
            assert server.stats.forwarded == 1
            assert server.stats.tunnels == 1
            assert server.stats.auth_failures == 1

    run(main)


# --- ncat as the client -----------------------------------------------------------------------


def test_ncat_client_through_the_proxy(run: Runner) -> None:
    """ncat's own HTTP proxy client (it answers the 407 challenge with its credentials)
    reaches a target through the tunnel, both ways with half-close; wrong credentials
    end it with ncat's error and exit status 1."""
    ncat = shutil.which("ncat")
    if ncat is None:
        pytest.skip("ncat is not installed")
    payload = os.urandom(100_000)

    def ncat_client(
        proxy_port: int, target_port: int, auth: str
    ) -> subprocess.CompletedProcess[bytes]:
        command = [ncat, "--proxy", f"127.0.0.1:{proxy_port}", "--proxy-type", "http"]
        command += ["--proxy-auth", auth, "127.0.0.1", str(target_port)]
        return subprocess.run(
            command, input=payload, capture_output=True, timeout=TIMEOUT, check=False
        )

    async def main() -> None:
        async with (
            proxy_server(auth=("user", "pw")) as (server, port),
            origin(echo_then_digest) as target,
        ):
            done = await asyncio.to_thread(ncat_client, port, target, "user:pw")
            assert done.returncode == 0, done.stderr
            assert done.stdout == payload + hashlib.sha256(payload).digest()
            refused = await asyncio.to_thread(ncat_client, port, target, "user:wrong")
            assert refused.returncode == 1
            assert b"407" in refused.stderr
            await until(lambda: server.stats.active == 0)
            assert server.stats.tunnels == 1

    run(main)


def test_log_lines(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    """One line per connection: the challenge at INFO, wrong credentials and errors at
    WARNING, a finished tunnel at INFO with its request and byte counts."""

    async def main() -> None:
        async with proxy_server(auth=(USER, PASSWORD)) as (server, port):
            connect = b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n"
            await ask(port, connect + b"\r\n")
            await ask(port, connect + b"Proxy-Authorization: Basic eDp5\r\n\r\n")
            await check_tunnel(port, GOOD_AUTH)
            await until(lambda: server.stats.active == 0)

    with caplog.at_level(logging.INFO, logger="sockit.relay.http_proxy"):
        run(main)
    records = [r for r in caplog.records if r.name == "sockit.relay.http_proxy"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.INFO]
    assert "407 Proxy Authentication Required (no Proxy-Authorization)" in records[0].message
    assert "wrong Proxy-Authorization" in records[1].message
    assert '"CONNECT 127.0.0.1:' in records[2].message
    assert "13 bytes sent, 45 bytes received" in records[2].message
    assert "(eof)" in records[2].message
