"""ncat mode, listening with ``-k``: many clients at once (real subprocesses, loopback).

* ``sockit -l -k PORT -e /bin/cat`` echoes for 300 clients that each send a line and
  half-close (ncat 7.93 echoed 0 of 300 in this test: it lost the child's output after
  the client's half-close).
* ``sockit -lk`` holds 5,000 concurrent clients (ncat aborts at 1,024 descriptors),
  broadcasts stdin to all of them and writes what each sends to stdout.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

TIMEOUT = 30.0


@contextlib.contextmanager
def listening(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    # No -v: the test reads stderr only up to the port, so nothing may fill that pipe.
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "-l", "-k", "127.0.0.1", "0", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        port = 0
        for _ in range(5):
            line = process.stderr.readline().decode()
            if "Listening on" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "no Listening line"
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_exec_cat_echoes_for_300_half_closing_clients() -> None:
    with listening("-e", "/bin/cat", "-m", "400") as (process, port):
        clients = []
        try:
            for index in range(300):
                client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                clients.append(client)
                client.sendall(b"line %d\n" % index)
                client.shutdown(socket.SHUT_WR)
            echoed = 0
            for index, client in enumerate(clients):
                reply = b""
                while data := client.recv(4096):
                    reply += data
                echoed += reply == b"line %d\n" % index
        finally:
            for client in clients:
                client.close()
        assert echoed == 300
        assert process.poll() is None


def test_keep_open_holds_5000_clients_and_broadcasts_stdin() -> None:
    count = 5000
    with listening("-m", str(count + 10)) as (process, port):
        assert process.stdin is not None
        assert process.stdout is not None
        clients: list[socket.socket] = []
        try:
            for _ in range(count):
                client = socket.socket()
                client.settimeout(TIMEOUT)
                client.connect(("127.0.0.1", port))
                clients.append(client)
            # Each client sends one byte; 5,000 bytes on stdout prove every one of
            # them was accepted and is relayed.
            for client in clients:
                client.sendall(b".")
            received = b""
            deadline = time.monotonic() + TIMEOUT
            while len(received) < count and time.monotonic() < deadline:
                received += os.read(process.stdout.fileno(), count - len(received))
            assert received == b"." * count
            process.stdin.write(b"to everyone\n")
            process.stdin.flush()
            got = 0
            with selectors.DefaultSelector() as selector:
                for client in clients:
                    client.setblocking(False)
                    selector.register(client, selectors.EVENT_READ)
                pending: dict[socket.socket, bytes] = {}
                while got < count and time.monotonic() < deadline:
                    for key, _ in selector.select(1.0):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        pending[sock] = pending.get(sock, b"") + sock.recv(100)
                        if pending[sock] == b"to everyone\n":
                            got += 1
                            selector.unregister(sock)
            assert got == count
            assert process.poll() is None
        finally:
            for client in clients:
                client.close()


def test_listen_proxy_type_http_tunnels_with_authentication() -> None:
    import base64  # noqa: PLC0415
    import os as _os  # noqa: PLC0415
    import threading  # noqa: PLC0415

    target = socket.create_server(("127.0.0.1", 0))

    def echo_once() -> None:
        conn, _ = target.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=echo_once)
    thread.start()
    environment = dict(_os.environ, NCAT_PROXY_AUTH="user:secret")
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "-l", "127.0.0.1", "0", "--proxy-type", "http"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        assert "Listening on" in line, line
        port = int(line.rsplit(":", 1)[1])
        request = f"CONNECT 127.0.0.1:{target.getsockname()[1]} HTTP/1.1\r\n".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(request + b"\r\n")
            assert client.recv(100).startswith(b"HTTP/1.0 407")
        credentials = base64.b64encode(b"user:secret")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(request + b"Proxy-Authorization: Basic " + credentials + b"\r\n\r\n")
            assert client.recv(19) == b"HTTP/1.0 200 OK\r\n\r\n"
            client.sendall(b"through the tunnel")
            client.shutdown(socket.SHUT_WR)
            reply = b""
            while data := client.recv(65536):
                reply += data
        assert reply == b"through the tunnel"
    finally:
        process.terminate()
        process.wait(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()
        thread.join(TIMEOUT)
        target.close()


# --- -l -k with ncat's EOF options -------------------------------------------------------


def read_to_eof(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def test_keep_open_gives_stdin_typed_before_any_client_to_the_first() -> None:
    with listening() as (process, port):
        assert process.stdin is not None
        process.stdin.write(b"typed before anyone came\n")
        process.stdin.close()
        time.sleep(0.3)  # stdin's EOF is there before the client
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            assert read_to_eof(client) == b"typed before anyone came\n"
        assert process.poll() is None  # -k: still serving


def test_keep_open_send_only_drops_clients_data_and_ends_at_stdin_eof() -> None:
    with listening("--send-only") as (process, port):
        assert process.stdin is not None
        assert process.stdout is not None
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"nobody reads this\n")
            process.stdin.write(b"announcement\n")
            process.stdin.close()
            assert read_to_eof(client) == b"announcement\n"
            assert process.wait(TIMEOUT) == 0
        assert process.stdout.read() == b""


def test_keep_open_recv_only_never_reads_stdin_nor_half_closes() -> None:
    with listening("--recv-only") as (process, port):
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(b"never sent\n")
        process.stdin.close()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"to stdout\n")
            assert process.stdout.readline() == b"to stdout\n"
            client.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                assert client.recv(100) == b"", "stdin reached a --recv-only client"
                raise AssertionError("--recv-only half-closed the client at stdin EOF")


def test_keep_open_no_shutdown_leaves_clients_open_at_stdin_eof() -> None:
    with listening("--no-shutdown") as (process, port):
        assert process.stdin is not None
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            process.stdin.write(b"hello\n")
            process.stdin.close()
            assert client.recv(100) == b"hello\n"
            client.settimeout(0.5)
            with pytest.raises(TimeoutError):
                client.recv(100)  # no EOF: the client stays fully open
            assert process.poll() is None


def test_keep_open_quit_after_stdin_eof() -> None:
    with listening("-q", "300ms") as (process, port):
        assert process.stdin is not None
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            process.stdin.write(b"bye\n")
            process.stdin.close()
            assert read_to_eof(client) == b"bye\n"  # half-closed at once
            assert process.wait(TIMEOUT) == 0  # and the hub quits 300 ms later
