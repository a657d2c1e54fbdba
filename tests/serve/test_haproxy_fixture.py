"""Interop with a real HAProxy: our PROXY protocol codec against HAProxy's, both ways.

* HAProxy as the sender (``send-proxy``, ``send-proxy-v2`` on a server line): an echo
  backend reads the header with :func:`parse_proxy_header` and must find the real
  client's address and port, HAProxy's CRC32C and unique-id TLVs.
* HAProxy as the receiver (``accept-proxy`` on a bind line): headers made by
  :func:`encode_proxy_v1`/:func:`encode_proxy_v2` must be accepted, and what HAProxy
  understood comes back through a ``send-proxy-v2`` server line (our encoder -> HAProxy's
  parser -> HAProxy's encoder -> our parser); a connection without a valid header must
  be closed before any data reaches the backend.

This also tests the ``haproxy`` fixture itself (tests/serve/haproxy.py). Only
127.0.0.1 carries traffic; the other addresses appear only inside PROXY headers.
"""

from __future__ import annotations

import errno
import socket
import threading
from typing import TYPE_CHECKING

import pytest
from haproxy import HAProxyFactory, find_haproxy, haproxy_fixture  # noqa: F401 - registers it

from sockit.addr import SocketAddress
from sockit.proto.proxy import (
    TLV_AUTHORITY,
    TLV_CRC32C,
    TLV_UNIQUE_ID,
    encode_proxy_v1,
    encode_proxy_v2,
    parse_proxy_header,
)

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from sockit.proto.proxy import ProxyHeader

IO_TIMEOUT = 10.0
# Bounds every receive loop: far more reads than any of these exchanges needs.
MAX_READS = 10_000
PAYLOAD = b"hello through haproxy\n" * 100


def inet(host: str, port: int) -> SocketAddress:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return SocketAddress(family, host, port)


def haproxy_config(
    frontend_port: int, bind_options: str, backend_port: int, server_options: str
) -> str:
    # Logs go to HAProxy's stderr, which the fixture keeps for failure messages.
    return f"""
global
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend front
    bind 127.0.0.1:{frontend_port} {bind_options}
    unique-id-format %ci:%cp
    default_backend back

backend back
    server echo 127.0.0.1:{backend_port} {server_options}
"""


class ProxiedEchoServer:
    """A one-connection echo server on 127.0.0.1 that first reads a PROXY header.

    The header is parsed with our :func:`parse_proxy_header`, fed as the bytes arrive;
    the bytes after it are echoed until EOF, then the server half-closes. Whatever goes
    wrong in the thread is kept in ``error`` and re-raised by :meth:`result`.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(IO_TIMEOUT)
        self.port: int = self.listener.getsockname()[1]
        self.header: ProxyHeader | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="proxied-echo")

    def __enter__(self) -> ProxiedEchoServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # shutdown() wakes a thread blocked in accept() (Linux), so a failed test does
        # not wait for the accept timeout.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=IO_TIMEOUT + 5)
        self.listener.close()
        assert not self._thread.is_alive(), "echo thread did not finish"

    def result(self) -> ProxyHeader:
        """The header the server read; re-raises the thread's error."""
        self._thread.join(timeout=IO_TIMEOUT + 5)
        if self.error is not None:
            raise self.error
        assert self.header is not None
        return self.header

    def _serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
            with connection:
                connection.settimeout(IO_TIMEOUT)
                self._echo(connection)
        except BaseException as exc:  # handed to the test thread by result()
            self.error = exc

    def _echo(self, connection: socket.socket) -> None:
        received = b""
        header = None
        for _ in range(MAX_READS):
            header = parse_proxy_header(received)
            if header is not None:
                break
            chunk = connection.recv(4096)
            if not chunk:
                raise EOFError(f"EOF before a complete PROXY header: {received!r}")
            received += chunk
        assert header is not None, "no PROXY header within MAX_READS reads"
        self.header = header
        connection.sendall(received[header.consumed :])
        for _ in range(MAX_READS):
            chunk = connection.recv(65536)
            if not chunk:
                break
            connection.sendall(chunk)
        connection.shutdown(socket.SHUT_WR)


def exchange(port: int, data: bytes) -> tuple[bytes, SocketAddress]:
    """Send ``data`` to 127.0.0.1:port, half-close, return the reply and our address."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as client:
        local = SocketAddress.from_sockaddr(client.family, client.getsockname())
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        reply = b""
        for _ in range(MAX_READS):
            chunk = client.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply, local


def exchange_expecting_close(port: int, data: bytes) -> bytes:
    """Like :func:`exchange`, but a reset by the peer at any point reads as ``b""``.

    HAProxy may reset the connection while we are still sending (or before we
    half-close), which surfaces as ECONNRESET, EPIPE or ENOTCONN depending on timing.
    """
    try:
        reply, _ = exchange(port, data)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise
        return b""
    return reply


# --- HAProxy sends, we parse ---------------------------------------------------------


@pytest.mark.parametrize(
    ("server_options", "version"),
    [
        pytest.param("send-proxy", 1, id="v1"),
        pytest.param("send-proxy-v2", 2, id="v2"),
        pytest.param("send-proxy-v2 proxy-v2-options crc32c,unique-id", 2, id="v2-tlvs"),
    ],
)
def test_haproxy_send_proxy_gives_the_real_client_address(
    haproxy: HAProxyFactory, server_options: str, version: int
) -> None:
    frontend_port = haproxy.free_port()
    with ProxiedEchoServer() as backend:
        haproxy(haproxy_config(frontend_port, "", backend.port, server_options))
        reply, client = exchange(frontend_port, PAYLOAD)
        header = backend.result()
    assert reply == PAYLOAD
    assert header.version == version
    assert header.command == "PROXY"
    assert header.family == socket.AF_INET
    assert header.transport == "STREAM"
    assert header.source == inet("127.0.0.1", client.port)
    assert header.destination == inet("127.0.0.1", frontend_port)
    if "crc32c" in server_options:
        # Present, and already verified by the parser (a mismatch raises).
        assert len(header.tlvs[TLV_CRC32C]) == 4
        assert header.tlvs[TLV_UNIQUE_ID] == f"127.0.0.1:{client.port}".encode()


def test_haproxy_output_is_kept_for_diagnosis(haproxy: HAProxyFactory) -> None:
    frontend_port = haproxy.free_port()
    with ProxiedEchoServer() as backend:
        instance = haproxy(haproxy_config(frontend_port, "", backend.port, "send-proxy-v2"))
        assert instance.process.poll() is None
        assert instance.ports == [frontend_port]
        reply, _ = exchange(frontend_port, b"x")
        backend.result()
    assert reply == b"x"
    instance.stop()
    instance.stop()  # idempotent
    assert instance.process.returncode is not None
    assert "front" in instance.config_path.read_text()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("1", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_haproxy_skips_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    with pytest.raises(outcome, match="haproxy is not installed"):
        find_haproxy()


def test_haproxy_that_cannot_start_fails_with_its_output(haproxy: HAProxyFactory) -> None:
    port = haproxy.free_port()
    with pytest.raises(pytest.fail.Exception, match="exited with status") as caught:
        haproxy(f"frontend broken\n    bind 127.0.0.1:{port}\n    no-such-keyword\n")
    assert "no-such-keyword" in str(caught.value)


# --- we send, HAProxy parses (and tells us what it understood) -----------------------

SOURCE4 = inet("127.1.2.3", 4242)
DESTINATION4 = inet("127.0.0.9", 8080)
SOURCE6 = inet("2001:db8::7", 40000)
DESTINATION6 = inet("2001:db8::8", 443)


@pytest.mark.parametrize(
    ("header", "expected_source", "expected_destination"),
    [
        pytest.param(encode_proxy_v1(SOURCE4, DESTINATION4), SOURCE4, DESTINATION4, id="v1-tcp4"),
        pytest.param(encode_proxy_v1(SOURCE6, DESTINATION6), SOURCE6, DESTINATION6, id="v1-tcp6"),
        pytest.param(encode_proxy_v2(SOURCE4, DESTINATION4), SOURCE4, DESTINATION4, id="v2-tcp4"),
        pytest.param(encode_proxy_v2(SOURCE6, DESTINATION6), SOURCE6, DESTINATION6, id="v2-tcp6"),
        pytest.param(
            encode_proxy_v2(SOURCE4, DESTINATION4, tlvs={TLV_CRC32C: b"", TLV_AUTHORITY: b"x"}),
            SOURCE4,
            DESTINATION4,
            id="v2-crc32c",
        ),
        # LOCAL and UNKNOWN: HAProxy must fall back to the real connection's addresses.
        pytest.param(encode_proxy_v2(None, None, command="LOCAL"), None, None, id="v2-local"),
        pytest.param(encode_proxy_v1(None, None), None, None, id="v1-unknown"),
    ],
)
def test_haproxy_accepts_our_headers(
    haproxy: HAProxyFactory,
    header: bytes,
    expected_source: SocketAddress | None,
    expected_destination: SocketAddress | None,
) -> None:
    frontend_port = haproxy.free_port()
    with ProxiedEchoServer() as backend:
        haproxy(haproxy_config(frontend_port, "accept-proxy", backend.port, "send-proxy-v2"))
        reply, client = exchange(frontend_port, header + PAYLOAD)
        forwarded = backend.result()
    assert reply == PAYLOAD
    if expected_source is None:
        expected_source = client
        expected_destination = inet("127.0.0.1", frontend_port)
    assert forwarded.source == expected_source
    assert forwarded.destination == expected_destination


def test_haproxy_forwards_our_authority_tlv(haproxy: HAProxyFactory) -> None:
    frontend_port = haproxy.free_port()
    header = encode_proxy_v2(SOURCE4, DESTINATION4, tlvs={TLV_AUTHORITY: b"example.test"})
    with ProxiedEchoServer() as backend:
        haproxy(
            haproxy_config(
                frontend_port,
                "accept-proxy",
                backend.port,
                "send-proxy-v2 proxy-v2-options authority",
            )
        )
        reply, _ = exchange(frontend_port, header + PAYLOAD)
        forwarded = backend.result()
    assert reply == PAYLOAD
    assert forwarded.tlvs[TLV_AUTHORITY] == b"example.test"


def corrupt_checksum(header: bytes) -> bytes:
    parsed = parse_proxy_header(header)
    assert parsed is not None
    # The CRC32C value is the last TLV here: flip a bit of it.
    return header[:-1] + bytes([header[-1] ^ 0x01])


@pytest.mark.parametrize(
    "first_bytes",
    [
        pytest.param(b"hello\r\n", id="no-header"),
        pytest.param(b"PROXY TCP4 127.1.2.3 127.0.0.9 4242\r\n", id="v1-missing-port"),
        pytest.param(
            corrupt_checksum(encode_proxy_v2(SOURCE4, DESTINATION4, tlvs={TLV_CRC32C: b""})),
            id="v2-bad-crc32c",
        ),
    ],
)
def test_haproxy_refuses_connections_without_a_valid_header(
    haproxy: HAProxyFactory, first_bytes: bytes
) -> None:
    frontend_port = haproxy.free_port()
    # No accept thread: a connection HAProxy wrongly forwarded would wait in the backlog.
    with socket.create_server(("127.0.0.1", 0)) as backend:
        backend_port = backend.getsockname()[1]
        instance = haproxy(haproxy_config(frontend_port, "accept-proxy", backend_port, ""))
        assert exchange_expecting_close(frontend_port, first_bytes + PAYLOAD) == b""
        backend.setblocking(False)
        with pytest.raises(BlockingIOError):
            backend.accept()
    # Stopped first, so HAProxy's log of the refusal is complete.
    instance.stop()
    assert "PROXY protocol header" in instance.output()
