"""``sockit relay`` at its file-descriptor limit, and with ``--workers``.

* At the fd limit a listening relay stops accepting (the kernel queues new clients)
  instead of accepting and resetting them, and serves the queued ones as soon as a
  connection ends.
* ``--workers N`` relays in N processes from one listener: both serve, SIGTERM ends
  all of them with status 0 and no process is left behind.

Every process started here is stopped by its pid in a ``finally``; loopback only.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

TIMEOUT = 10.0


def _echo_server() -> tuple[socket.socket, threading.Thread, threading.Event]:
    """A thread echoing every connection on 127.0.0.1 until ``stop`` is set."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            conn.settimeout(TIMEOUT)
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return server, thread, stop


def _echo(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def _start_relay(
    args: list[str], *, nofile: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "relay", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit if nofile is not None else None,  # noqa: PLW1509
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    assert "Listening on" in line, line
    return process, int(line.rsplit(":", 1)[1])


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(TIMEOUT)
    if process.stderr is not None:
        process.stderr.close()
    return process.returncode


def _round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_at_the_fd_limit_new_clients_wait_instead_of_being_reset() -> None:
    server, thread, stop = _echo_server()
    # 256 fds are kept in reserve and each connection holds 2: room for 10.
    relay, port = _start_relay(
        ["tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{server.getsockname()[1]}"], nofile=276
    )
    clients: list[socket.socket] = []
    try:
        for index in range(10):
            client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            clients.append(client)
            assert _round_trip(client, b"%d" % index) == b"%d" % index
        waiting = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        clients.append(waiting)
        waiting.sendall(b"queued")
        waiting.settimeout(0.5)
        try:
            early = waiting.recv(100)
        except TimeoutError:
            early = None
        assert early is None, f"served past the fd limit: {early!r}"
        # One connection ends: the queued client is served, not reset.
        clients[0].close()
        waiting.settimeout(TIMEOUT)
        assert waiting.recv(100) == b"queued"
        assert relay.poll() is None
    finally:
        for client in clients:
            client.close()
        assert _stop(relay) == 0
        stop.set()
        thread.join(TIMEOUT)
        server.close()


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(child) for child in text.split()]


def test_workers_share_one_listener_and_stop_together() -> None:
    server, thread, stop = _echo_server()
    relay, port = _start_relay(
        ["--workers", "2", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{server.getsockname()[1]}"]
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children(relay.pid)
            time.sleep(0.02)
        assert len(workers) == 2, workers
        for index in range(50):
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
                assert _round_trip(client, b"x%d" % index) == b"x%d" % index
    finally:
        assert _stop(relay) == 0
        stop.set()
        thread.join(TIMEOUT)
        server.close()
    for worker in workers:
        assert not os.path.exists(f"/proc/{worker}"), f"worker {worker} outlived the relay"


def test_workers_end_when_the_parent_is_killed() -> None:
    server, thread, stop = _echo_server()
    relay, _ = _start_relay(
        ["--workers", "2", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{server.getsockname()[1]}"]
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = _children(relay.pid)
            time.sleep(0.02)
        assert len(workers) == 2, workers
        relay.kill()  # SIGKILL: the parent cannot stop its workers itself
        relay.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while any(os.path.exists(f"/proc/{pid}") for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
            time.sleep(0.02)
    finally:
        _stop(relay)
        stop.set()
        thread.join(TIMEOUT)
        server.close()
