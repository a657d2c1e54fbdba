"""Real signals to a server process: SIGTERM drains, a second signal aborts."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sockit

SERVER = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    from sockit.serve import serve

    def echo(stream):
        while data := stream.recv(65536):
            stream.sendall(data)

    async def async_echo(stream):
        while data := await stream.recv(65536):
            await stream.sendall(data)

    handler = async_echo if sys.argv[1] == "async" else echo
    server = serve(handler, 0, "127.0.0.1", mode=sys.argv[1], drain_timeout=float(sys.argv[2]))
    print(server.port, flush=True)
    server.serve_forever()
    """
)

TRANSFERS = 50
CHUNK = 64 * 1024
CHUNKS = 16  # 1 MiB per transfer


class ServerProcess:
    """A server subprocess whose stderr lines arrive on a queue."""

    def __init__(self, mode: str, drain_timeout: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode, str(drain_timeout)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for_line(self, fragment: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the server never logged {fragment!r}"
            line = self.lines.get(timeout=remaining)
            if fragment in line:
                return line

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(10)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


@pytest.mark.parametrize("mode", ["thread", "fork", "async"])
def test_sigterm_refuses_new_connects_at_once_and_lets_50_transfers_finish(mode: str) -> None:
    server = ServerProcess(mode, drain_timeout=10)
    ready = threading.Barrier(TRANSFERS + 1)
    go = threading.Event()
    results: list[str] = []
    lock = threading.Lock()

    def transfer(number: int) -> None:
        payload = bytes((number + i) % 251 for i in range(CHUNK))
        outcome = "ok"
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                # In flight: the first chunk went through before the signal.
                sock.sendall(payload)
                if recv_exactly(sock, CHUNK) != payload:
                    outcome = "first chunk corrupted"
                ready.wait(20)
                go.wait(20)
                for _ in range(CHUNKS - 1):
                    sock.sendall(payload)
                    if recv_exactly(sock, CHUNK) != payload:
                        outcome = "corrupted during the drain"
                        break
                sock.shutdown(socket.SHUT_WR)
                if sock.recv(1) != b"":
                    outcome = "no clean EOF"
        except Exception as error:
            outcome = repr(error)
        with lock:
            results.append(outcome)

    clients = [threading.Thread(target=transfer, args=(n,)) for n in range(TRANSFERS)]
    try:
        for client in clients:
            client.start()
        ready.wait(30)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_line("stopped accepting", timeout=5)
        stopped_after = time.monotonic() - signalled
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        go.set()
        for client in clients:
            client.join(30)
        assert server.process.wait(timeout=15) == 0
        exited_after = time.monotonic() - signalled
    finally:
        go.set()
        ready.abort()
        for client in clients:
            client.join(30)
        server.close()
    assert results == ["ok"] * TRANSFERS
    assert stopped_after < 1.0
    assert exited_after < 10  # within drain_timeout: nothing had to be aborted


def test_sigint_then_sigint_again_aborts_with_a_reset() -> None:
    server = ServerProcess("thread", drain_timeout=30)
    try:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"x")
            assert client.recv_exactly(1) == b"x"
            server.process.send_signal(signal.SIGINT)
            server.wait_for_line("received SIGINT: draining", timeout=5)
            with pytest.raises(TimeoutError):
                client.recv(1, timeout=0.3)  # still being served: draining
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionResetError):
                client.recv(1, timeout=5)
            reset_after = time.monotonic() - signalled
        assert server.process.wait(timeout=10) == 0
        server.wait_for_line("aborting 1 connection", timeout=5)
    finally:
        server.close()
    assert reset_after < 2


def test_a_fork_child_ignores_the_terminal_interrupt_and_the_drain_completes() -> None:
    # A terminal's Ctrl-C reaches the whole process group: the children must let the
    # parent decide (drain first), not die of it.
    server = ServerProcess("fork", drain_timeout=30)
    try:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            client.sendall(b"x")
            assert client.recv_exactly(1) == b"x"
            for pid in _children_of(server.process.pid):
                os.kill(pid, signal.SIGINT)
            server.process.send_signal(signal.SIGINT)
            server.wait_for_line("received SIGINT: draining", timeout=5)
            client.sendall(b"y")
            assert client.recv_exactly(1, timeout=5) == b"y"
            client.send_eof()
            assert client.recv(1, timeout=5) == b""
        assert server.process.wait(timeout=10) == 0
    finally:
        server.close()


def _children_of(pid: int) -> list[int]:
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
                children.extend(int(word) for word in file.read().split())
        except OSError:
            continue
    return children
