"""Accept errors: transient ones are survived, resource ones back off without spinning.

Errors are injected through the socket factory (sockit.testing.faults), and the real
thing (EMFILE under RLIMIT_NOFILE=64) runs in a subprocess server.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve import serve
from sockit.testing.faults import FaultySocketFactory

if TYPE_CHECKING:
    from sockit import SocketStream


def echo(stream: SocketStream) -> None:
    while data := stream.recv(65536):
        stream.sendall(data)


def echo_once(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    with sockit.connect("127.0.0.1", port, timeout=timeout) as client:
        client.sendall(payload)
        return client.recv_exactly(len(payload))


TRANSIENT = [
    errno.ECONNABORTED,
    errno.EPERM,
    errno.EPROTO,
    errno.ENETDOWN,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
]
RESOURCE = [errno.ENOBUFS, errno.ENOMEM, errno.EMFILE, errno.ENFILE]


@pytest.mark.parametrize("code", TRANSIENT, ids=errno.errorcode.get)
def test_a_transient_accept_error_leaves_the_server_serving(code: int) -> None:
    faults = FaultySocketFactory()
    with serve(echo, 0, "127.0.0.1", socket_factory=faults) as server:
        faults.fail_accepts(code, consume=True)
        # The connection the error is about dies in the queue, as in the kernel (the
        # reset may even beat connect() back to this thread).
        with pytest.raises(ConnectionResetError):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as doomed:
                doomed.recv(1)
        assert faults.raised == [code]
        assert echo_once(server.port) == b"ping"
    assert server.stats.accept_errors == 0  # retried inside the listener, no back-off
    assert server.stats.accepted == 1


@pytest.mark.parametrize("code", RESOURCE, ids=errno.errorcode.get)
def test_a_resource_accept_error_backs_off_and_service_resumes(code: int) -> None:
    faults = FaultySocketFactory()
    with serve(echo, 0, "127.0.0.1", socket_factory=faults) as server:
        faults.fail_accepts(code)
        # The connection stays queued while the server backs off, then is served.
        assert echo_once(server.port) == b"ping"
        assert faults.raised == [code]
    assert server.stats.accept_errors == 1
    assert server.stats.accepted == 1


def test_back_off_doubles_without_spinning_and_logs_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sockit.serve")
    faults = FaultySocketFactory()
    with serve(echo, 0, "127.0.0.1", socket_factory=faults) as server:
        faults.fail_accepts(*[errno.EMFILE] * 6)
        started = time.monotonic()
        assert echo_once(server.port) == b"ping"
        elapsed = time.monotonic() - started
    # 10 + 20 + 40 + 80 + 160 + 320 ms of waiting, one accept attempt after each.
    assert faults.raised == [errno.EMFILE] * 6
    assert 0.6 <= elapsed < 3
    assert server.stats.accept_errors == 6
    lines = [r for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(lines) == 1
    assert "EMFILE" in lines[0].getMessage()


def test_back_off_ends_early_when_a_connection_closes() -> None:
    faults = FaultySocketFactory()
    with serve(echo, 0, "127.0.0.1", socket_factory=faults) as server:
        holder = sockit.connect("127.0.0.1", server.port, timeout=5)
        try:
            holder.sendall(b"x")
            assert holder.recv_exactly(1) == b"x"
            # Waits of 10, 20, ... 640 ms, then 1 s: after the 9th failure the server
            # would wait a whole second, unless one of its connections gives an fd back.
            faults.fail_accepts(*[errno.EMFILE] * 9)
            with sockit.connect("127.0.0.1", server.port, timeout=10) as waiting:
                assert faults.wait_for_raised(9, timeout=10)
                closed_at = time.monotonic()
                holder.close()
                waiting.sendall(b"y")
                assert waiting.recv_exactly(1, timeout=5) == b"y"
                resumed_after = time.monotonic() - closed_at
        finally:
            holder.close()
    assert resumed_after < 0.5


def test_a_fatal_accept_error_stops_the_server_and_is_raised() -> None:
    faults = FaultySocketFactory()
    server = serve(echo, 0, "127.0.0.1", socket_factory=faults)
    server.start()
    faults.fail_accepts(errno.EBADF)
    # The listener is closed under the queued connection: it is reset (during the
    # connect or after it) or closed.
    with contextlib.suppress(ConnectionResetError):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            assert client.recv(1) == b""
    with pytest.raises(OSError) as raised:
        server.shutdown()
    assert raised.value.errno == errno.EBADF


# --- the real thing: EMFILE in a subprocess ------------------------------------------------

EMFILE_SERVER = textwrap.dedent(
    """
    import logging, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(created).3f %(message)s"
    )
    from sockit.serve import serve

    def echo(stream):
        while data := stream.recv(65536):
            stream.sendall(data)

    server = serve(echo, 0, "127.0.0.1", mode="thread", drain_timeout=5)
    print(server.port, flush=True)
    server.serve_forever()
    """
)

CLIENTS = 150
HOLD_SECONDS = 5.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_backs_off_cheaply_and_service_resumes_after_the_load() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()
    assert child.stderr is not None
    stderr = child.stderr

    def read_stderr() -> None:
        for raw in stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            stamp = text.split(" ", 1)[0]
            try:
                lines.put((float(stamp), text))
            except ValueError:
                lines.put((time.time(), text))

    reader = threading.Thread(target=read_stderr)
    reader.start()
    clients: list[socket.socket] = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        clients.extend(
            socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CLIENTS)
        )
        # Wait for the server to run out of fds (its first back-off line).
        first = wait_for_line(lines, "accept failed", timeout=10)
        assert "EMFILE" in first[1]
        window_start = time.time()
        cpu_before = cpu_seconds(child.pid)
        # The open connections keep being served while new ones cannot be accepted.
        clients[0].sendall(b"still served")
        assert recv_exactly(clients[0], 12) == b"still served"
        time.sleep(HOLD_SECONDS)  # the measurement window itself, not a synchronisation
        cpu_used = cpu_seconds(child.pid) - cpu_before
        window_end = time.time()
        for client in clients:
            client.close()
        clients.clear()
        load_gone = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fresh:
            fresh.sendall(b"back")
            assert recv_exactly(fresh, 4) == b"back"
        resumed_after = time.monotonic() - load_gone
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=15) == 0
    finally:
        for client in clients:
            client.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        reader.join(10)
        assert child.stdout is not None
        child.stdout.close()
        stderr.close()
    logged = [first]
    while not lines.empty():
        logged.append(lines.get_nowait())
    in_window = [stamp for stamp, _ in logged if window_start <= stamp <= window_end]
    assert cpu_used <= 0.25, f"{cpu_used:.3f} s of CPU in {HOLD_SECONDS} s"
    assert len(in_window) <= HOLD_SECONDS + 1, logged
    gaps = [later - earlier for earlier, later in itertools.pairwise(in_window)]
    assert all(gap >= 0.95 for gap in gaps), logged
    assert resumed_after < 1.5


def wait_for_line(
    lines: queue.Queue[tuple[float, str]], fragment: str, timeout: float
) -> tuple[float, str]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no log line containing {fragment!r}"
        stamp, text = lines.get(timeout=remaining)
        if fragment in text:
            return stamp, text


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
