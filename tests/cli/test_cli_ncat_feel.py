"""ncat mode's "output and feel" contracts, over real sockets and a real terminal:

* a closed stdout (``sockit ... | head -c1``) ends quietly with status 0;
* Ctrl-C (SIGINT) interrupts a connect that hangs and a transfer at once, exit 130;
* the terminal sockit ran on is left as it was: same termios settings, and its file
  description not left non-blocking (which would break the shell's next ``read``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 15.0


@contextlib.contextmanager
def flooding_server() -> Iterator[int]:
    """A server that sends to its one client until the client goes away."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                block = b"y" * 65536
                for _ in range(100_000):  # bounded: 6.5 GB at most
                    conn.sendall(block)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive()


def wait_for_line(process: subprocess.Popen[bytes], fragment: str) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        if fragment in line or not line:
            return line
    return ""


def test_closed_stdout_ends_quietly_with_status_0() -> None:
    with flooding_server() as port:
        reader, writer = os.pipe()
        head = subprocess.Popen(["head", "-c1"], stdin=reader, stdout=subprocess.PIPE)
        os.close(reader)
        process = subprocess.Popen(
            [sys.executable, "-m", "sockit", "127.0.0.1", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=writer,
            stderr=subprocess.PIPE,
        )
        os.close(writer)
        try:
            out, _ = head.communicate(timeout=TIMEOUT)
            assert out == b"y"
            _, err = process.communicate(timeout=TIMEOUT)
        finally:
            for child in (process, head):
                if child.poll() is None:
                    child.kill()
                    child.wait(TIMEOUT)
        assert process.returncode == 0, err
        assert err == b""


def test_ctrl_c_interrupts_a_transfer_at_once() -> None:
    with flooding_server() as port:
        process = subprocess.Popen(
            [sys.executable, "-m", "sockit", "-v", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert "Connected to" in wait_for_line(process, "Connected to")
            time.sleep(0.2)  # bytes are flowing
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            status = process.wait(TIMEOUT)
            assert time.monotonic() - started < 2.0
            assert status == 130
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
            for stream in (process.stdin, process.stderr):
                if stream is not None:
                    stream.close()


def test_ctrl_c_interrupts_a_connect_that_hangs() -> None:
    # A listener whose accept queue is full drops further SYNs: connect() hangs
    # (retransmitting) until interrupted. Loopback only.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        process = subprocess.Popen(
            [sys.executable, "-m", "sockit", "-v", "127.0.0.1", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert "Version" in wait_for_line(process, "Version")
            time.sleep(0.5)  # inside connect()
            assert process.poll() is None, "the connect did not hang: queue not full?"
            process.send_signal(signal.SIGINT)
            started = time.monotonic()
            assert process.wait(TIMEOUT) == 130
            assert time.monotonic() - started < 2.0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(TIMEOUT)
            for stream in (process.stdin, process.stderr):
                if stream is not None:
                    stream.close()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_the_terminal_is_left_as_it_was_after_ctrl_c() -> None:
    with flooding_server() as port:
        leader, follower = pty.openpty()
        try:
            before = termios.tcgetattr(follower)
            process = subprocess.Popen(
                [sys.executable, "-m", "sockit", "127.0.0.1", str(port)],
                stdin=follower,
                stdout=follower,
                stderr=subprocess.PIPE,
            )
            try:
                # Data flows to the terminal until its buffer is full (nobody reads
                # the leader side), then waits: a transfer in progress.
                time.sleep(0.5)
                assert process.poll() is None
                process.send_signal(signal.SIGINT)
                assert process.wait(TIMEOUT) == 130
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(TIMEOUT)
                if process.stderr is not None:
                    process.stderr.close()
            assert termios.tcgetattr(follower) == before
            flags = fcntl.fcntl(follower, fcntl.F_GETFL)
            assert not flags & os.O_NONBLOCK, "the terminal was left non-blocking"
        finally:
            os.close(leader)
            os.close(follower)


def test_trace_shows_each_socket_operation_as_it_happens() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            while conn.recv(65536):
                pass
            conn.sendall(b"reply")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        port = listener.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "sockit", "--trace", "127.0.0.1", str(port)],
            input=b"request",
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"reply"
    lines = [line.removeprefix("sockit: trace: ") for line in result.stderr.decode().splitlines()]
    tuple_ = next(line for line in lines if line.startswith("connected ")).removeprefix(
        "connected "
    )
    expected = [
        f"getaddrinfo 127.0.0.1 port {port}: 127.0.0.1:{port}",
        f"connect 127.0.0.1:{port} (attempt 1)",
        f"connected {tuple_}",
        "EOF from stdio",
        f"shutdown(SHUT_WR) to {tuple_}",
        f"EOF from {tuple_}",
    ]
    assert lines[: len(expected)] == expected
    assert tuple_.endswith(f" -> 127.0.0.1:{port}")
    assert f"close of {tuple_}" in lines[len(expected) :]


def test_trace_in_listen_mode_shows_listen_and_accept() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "--trace", "-l", "127.0.0.1", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = wait_for_line(process, "listen ")
        assert line.startswith("sockit: trace: listen 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            accepted = wait_for_line(process, "accept ")
            local = client.getsockname()
            assert accepted.strip() == (
                f"sockit: trace: accept 127.0.0.1:{port} -> 127.0.0.1:{local[1]}"
            )
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(TIMEOUT)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_log_format_json_makes_every_stderr_line_an_object() -> None:
    import json  # noqa: PLC0415

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"hi")

    thread = threading.Thread(target=serve)
    thread.start()
    port = listener.getsockname()[1]
    json_args = ["--log-format", "json", "127.0.0.1", str(port)]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sockit", "-v", "--trace", *json_args],
            input=b"",
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        thread.join(TIMEOUT)
        listener.close()
    refused = subprocess.run(
        [sys.executable, "-m", "sockit", *json_args],
        input=b"",
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.decode().splitlines()]
    messages = [(event["event"], event["message"]) for event in events]
    assert ("verbose", f"Connected to 127.0.0.1:{port}.") in messages
    assert ("trace", f"connect 127.0.0.1:{port} (attempt 1)") in messages
    assert messages[-1] == ("verbose", "0 bytes sent, 2 bytes received in 0.00 seconds.")
    # The listener is closed: the refusal is one JSON error line.
    assert refused.returncode == 1
    [error] = [json.loads(line) for line in refused.stderr.decode().splitlines()]
    assert error["level"] == "error"
    assert f"127.0.0.1:{port}" in error["message"]
