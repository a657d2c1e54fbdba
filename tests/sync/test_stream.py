"""SocketStream over real TCP: EOF, limits, timeouts that keep data, resets, sendfile."""

from __future__ import annotations

import hashlib
import math
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import sockit


@pytest.fixture
def pair() -> Iterator[tuple[sockit.SocketStream, sockit.SocketStream]]:
    with sockit.listen(0, "127.0.0.1") as listener:
        client = sockit.connect("127.0.0.1", listener.port, timeout=5)
        server = listener.accept(timeout=5)
    with client, server:
        yield client, server


def test_recv_returns_empty_only_at_eof(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"abc")
    assert server.recv(1) == b"a"
    assert server.recv() == b"bc"
    client.send_eof()
    assert server.recv() == b""
    assert server.recv() == b""


def test_recv_line_over_limit_raises_and_keeps_bytes(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"x" * 100 + b"\nshort\n")
    with pytest.raises(sockit.LimitExceeded):
        server.recv_line(max_bytes=50, timeout=5)
    assert server.recv_line(max_bytes=100, timeout=5) == b"x" * 100
    assert server.recv_line(timeout=5) == b"short"


def test_recv_line_limit_without_newline(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"y" * 5000)
    with pytest.raises(sockit.LimitExceeded):
        server.recv_line(max_bytes=1000, timeout=5)
    assert server.recv_exactly(5000, timeout=5) == b"y" * 5000


def test_timed_out_receive_keeps_buffered_bytes(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"partial li")
    with pytest.raises(TimeoutError):
        server.recv_line(timeout=0.1)
    client.sendall(b"ne\nnext")
    assert server.recv_line(timeout=5) == b"partial line"
    with pytest.raises(TimeoutError):
        server.recv_exactly(10, timeout=0.1)
    assert server.recv(timeout=5) == b"next"


def test_default_timeout_and_per_call_override(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    server.timeout = 0.05
    with pytest.raises(TimeoutError):
        server.recv()
    client.sendall(b"late")
    assert server.recv(timeout=math.inf) == b"late"
    with pytest.raises(ValueError, match="timeout"):
        server.recv(timeout=-1)


def test_message_helpers_at_eof(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"complete\nincomp")
    client.send_eof()
    assert server.recv_line(timeout=5) == b"complete"
    with pytest.raises(sockit.IncompleteRead) as caught:
        server.recv_line(timeout=5)
    assert caught.value.partial == b"incomp"
    with pytest.raises(sockit.EndOfStream):
        server.recv_line(timeout=5)
    with pytest.raises(sockit.EndOfStream):
        server.recv_exactly(1, timeout=5)


def test_recv_exactly_incomplete(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"12345")
    client.send_eof()
    with pytest.raises(sockit.IncompleteRead) as caught:
        server.recv_exactly(10, timeout=5)
    assert caught.value.partial == b"12345"
    assert caught.value.expected == 10


def test_recv_until_multibyte_delimiter(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody")
    assert server.recv_until(b"\r\n\r\n", max_bytes=1000, timeout=5) == (
        b"GET / HTTP/1.1\r\nHost: x"
    )
    assert server.recv(timeout=5) == b"body"


def test_half_close_keeps_other_direction(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    payload = os.urandom(1 << 20)

    def send() -> None:
        client.sendall(payload)
        client.send_eof()
        client.send_eof()  # idempotent

    sender = threading.Thread(target=send)
    sender.start()
    digest = hashlib.sha256()
    while chunk := server.recv(timeout=10):
        digest.update(chunk)
    sender.join(10)
    server.sendall(digest.digest())
    assert client.recv_exactly(32, timeout=5) == hashlib.sha256(payload).digest()
    with pytest.raises(sockit.ClosedResourceError):
        client.sendall(b"after eof")


def test_close_is_idempotent_and_use_after_close_is_closed_error(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, _server = pair
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(sockit.ClosedResourceError):
        client.recv()
    with pytest.raises(sockit.ClosedResourceError):
        client.sendall(b"x")
    with pytest.raises(OSError):  # ClosedResourceError keeps an OSError base
        client.recv()


def test_peer_reset_is_reported_as_reset_not_eof(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    client.sendall(b"data")
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.abort()
    with pytest.raises(ConnectionResetError) as caught:
        while client.recv(timeout=5):
            pass
    assert isinstance(caught.value, sockit.BrokenResourceError)
    assert isinstance(caught.value.__cause__, OSError)
    # The 4-tuple is still known after the reset.
    assert client.remote_address.port > 0


def test_send_to_closed_peer_is_broken(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    server.close()
    with pytest.raises(sockit.BrokenResourceError):
        for _ in range(100):
            client.sendall(b"x" * 65536, timeout=5)


def test_sendfile(pair: tuple[sockit.SocketStream, sockit.SocketStream], tmp_path: Path) -> None:
    client, server = pair
    data = os.urandom(300_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)

    def send() -> None:
        with path.open("rb") as file:
            assert client.sendfile(file) == len(data)
        client.send_eof()

    sender = threading.Thread(target=send)
    sender.start()
    received = bytearray()
    while chunk := server.recv(timeout=10):
        received += chunk
    sender.join(10)
    assert bytes(received) == data


def test_wrapping_a_socketpair() -> None:
    a, b = socket.socketpair()
    with sockit.SocketStream(a) as left, sockit.SocketStream(b) as right:
        left.sendall(b"one\ntwo\n")
        assert right.recv_line(timeout=5) == b"one"
        assert right.recv_line(timeout=5) == b"two"
        assert str(left.remote_address) == "unix:(unnamed)"


def test_non_stream_socket_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError, match="SOCK_STREAM"):
            sockit.SocketStream(udp)


def test_large_recv_exactly(pair: tuple[sockit.SocketStream, sockit.SocketStream]) -> None:
    client, server = pair
    payload = os.urandom(5 * 1024 * 1024)
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    assert server.recv_exactly(len(payload), timeout=20) == payload
    sender.join(10)


def test_take_buffered_hands_over_read_ahead_bytes(
    pair: tuple[sockit.SocketStream, sockit.SocketStream],
) -> None:
    client, server = pair
    assert server.take_buffered() == b""
    client.sendall(b"header\nbody bytes")
    client.send_eof()
    assert server.recv_line(timeout=5) == b"header"
    # Whatever the line read pulled in beyond the line is handed over, then the socket.
    rest = server.take_buffered()
    while chunk := server.recv(timeout=5):
        rest += chunk
    assert rest == b"body bytes"
    assert server.take_buffered() == b""
