"""ncat mode (``sockit [options] host port``), first cells of the EOF matrix: real
subprocesses over loopback; each test checks the bytes delivered, the exit status and
that the process ended."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading

import pytest

TIMEOUT = 10.0


def sockit(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sockit", *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


class Server:
    """A one-connection TCP server on 127.0.0.1 running ``behaviour(conn)`` in a thread."""

    def __init__(self, behaviour: object) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(behaviour,))
        self.thread.start()

    def _run(self, behaviour: object) -> None:
        try:
            self.listener.settimeout(TIMEOUT)
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                assert callable(behaviour)
                behaviour(self, conn)
        except BaseException as error:
            self.error = error

    def read_all(self, conn: socket.socket) -> None:
        while data := conn.recv(65536):
            self.received += data

    def join(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_stdin_eof_half_closes_and_the_reply_still_arrives() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        server.read_all(conn)  # until the client's FIN
        conn.sendall(b"got %d bytes" % len(server.received))

    server = Server(behaviour)
    result = sockit("127.0.0.1", str(server.port), stdin=b"x" * 100_000)
    server.join()
    assert server.received == b"x" * 100_000
    assert result.stdout == b"got 100000 bytes"
    assert result.returncode == 0, result.stderr


def test_socket_eof_ends_connect_mode_while_stdin_is_open() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        conn.sendall(b"bye")

    server = Server(behaviour)
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "127.0.0.1", str(server.port)],
        stdin=subprocess.PIPE,  # never closed by us until the end: stdin stays open
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        out = process.stdout.read()
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    server.join()
    assert out == b"bye"


def test_no_shutdown_keeps_the_socket_open_after_stdin_eof() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            server.read_all(conn)
        # No FIN arrived within 0.5 s: reply, then close (ends the client).
        server.received += b"|no-fin"
        conn.sendall(b"still open")

    server = Server(behaviour)
    result = sockit("--no-shutdown", "127.0.0.1", str(server.port), stdin=b"data")
    server.join()
    assert server.received == b"data|no-fin"
    assert result.stdout == b"still open"
    assert result.returncode == 0


def test_recv_only_never_reads_stdin() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        server.read_all(conn)

    server = Server(behaviour)
    result = sockit("--recv-only", "127.0.0.1", str(server.port), stdin=b"not sent")
    server.join()
    assert server.received == b""
    assert result.stdout == b"hello"
    assert result.returncode == 0


def test_send_only_drops_what_arrives_and_quits_after_stdin_eof() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        conn.sendall(b"ignored")
        server.read_all(conn)

    server = Server(behaviour)
    result = sockit("--send-only", "127.0.0.1", str(server.port), stdin=b"payload")
    server.join()
    assert server.received == b"payload"
    assert result.stdout == b""
    assert result.returncode == 0


def test_a_reset_is_exit_1_not_a_clean_end() -> None:
    def behaviour(server: Server, conn: socket.socket) -> None:
        conn.sendall(b"partial")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = Server(behaviour)
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "127.0.0.1", str(server.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate(timeout=TIMEOUT)
    server.join()
    assert process.returncode == 1, err
    assert len(err.decode().strip().splitlines()) == 1
    assert b"partial".startswith(out)


def test_refused_is_exit_1_naming_the_address() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = sockit("127.0.0.1", str(port), stdin=b"")
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--sctp", "127.0.0.1", "80"], "--sctp is not supported"),
        (["--ssl", "127.0.0.1", "80"], "TLS is not available yet"),
        (["127.0.0.1"], "port"),
        (["127.0.0.1", "99999"], "99999"),
        (["-4", "-6", "127.0.0.1", "80"], "contradict"),
    ],
)
def test_usage_errors_exit_2(args: list[str], fragment: str) -> None:
    result = sockit(*args, stdin=b"")
    assert result.returncode == 2
    assert fragment in result.stderr.decode()


def test_listen_without_k_serves_one_client_both_ways() -> None:
    listener = subprocess.Popen(
        [sys.executable, "-m", "sockit", "-v", "-l", "127.0.0.1", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert listener.stderr is not None
        assert listener.stdin is not None
        port = 0
        for _ in range(5):
            line = listener.stderr.readline().decode()
            if "Listening on" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "no Listening line"
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            client.sendall(b"from client")
            client.shutdown(socket.SHUT_WR)
            listener.stdin.write(b"from server")
            listener.stdin.close()
            reply = b""
            while data := client.recv(65536):
                reply += data
        assert listener.stdout is not None
        assert listener.stdout.read() == b"from client"
        assert listener.wait(TIMEOUT) == 0
        assert reply == b"from server"
    finally:
        if listener.poll() is None:
            listener.kill()
        listener.wait(TIMEOUT)
        for stream in (listener.stdout, listener.stderr):
            if stream is not None:
                stream.close()
