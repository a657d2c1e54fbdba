"""Fork mode: every child reaped, no fd growth in the parent, a clean slate in the child."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve import serve

if TYPE_CHECKING:
    from sockit import SocketStream


def echo(stream: SocketStream) -> None:
    while data := stream.recv(65536):
        stream.sendall(data)


def child_pids() -> set[int]:
    """Pids whose parent is this process (any thread of it), zombies included."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids.update(int(word) for word in (task / "children").read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return pids


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def echo_on(client: socket.socket, payload: bytes) -> None:
    client.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = client.recv(65536)
        assert chunk, "EOF before the echo"
        received += chunk
    assert received == payload


# The server runs in a process of its own, as `sockit serve --mode fork` is deployed: a
# fork server inside the (large) pytest process makes every child's exit expensive, and
# 200 of them exiting at once starve the parent's reaper of CPU on a 2-core machine,
# which would measure the test harness rather than the server.
_FORK_SERVER = textwrap.dedent(
    """
    import sys
    from sockit.serve import serve

    def echo(stream):
        while data := stream.recv(65536):
            stream.sendall(data)

    server = serve(echo, 0, "127.0.0.1", mode="fork")
    print(server.port, flush=True)
    server.serve_forever()
    """
)


def _children_of(pid: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            pids.update(int(word) for word in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _zombies_of(pid: int) -> list[int]:
    found = []
    for child in _children_of(pid):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            found.append(child)
    return found


def test_no_zombies_and_no_fd_growth_after_1000_sequential_and_200_concurrent() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _FORK_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as warm_up:
            echo_on(warm_up, b"warm")
        deadline = time.monotonic() + 5
        while _children_of(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        fds_before = len(os.listdir(f"/proc/{process.pid}/fd"))
        for number in range(1000):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                echo_on(client, b"%d" % number)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
        try:
            for number, client in enumerate(clients):
                echo_on(client, b"concurrent %d" % number)
            assert len(_children_of(process.pid)) == 200
        finally:
            for client in clients:
                client.close()
        last_disconnect = time.monotonic()
        # Within one second of the last disconnect every child is reaped.
        while _zombies_of(process.pid) or _children_of(process.pid):
            if time.monotonic() - last_disconnect > 1.0:
                break
            time.sleep(0.01)
        assert _zombies_of(process.pid) == []
        assert _children_of(process.pid) == set()
        assert len(os.listdir(f"/proc/{process.pid}/fd")) == fds_before
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode == 0


def report_fds_and_signals(stream: SocketStream) -> None:
    lines = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the fd listdir used, already closed
        lines.append(f"fd {name} {target}")
    term = signal.getsignal(signal.SIGTERM)
    lines.append(f"SIGTERM {'handler' if callable(term) else term}")
    lines.append(f"SIGINT {signal.getsignal(signal.SIGINT)}")
    lines.append(f"fileno {stream.fileno()}")
    stream.sendall("\n".join(lines).encode())


def test_the_child_keeps_only_its_connection_and_gets_fresh_signal_handlers() -> None:
    with serve(report_fds_and_signals, 0, "127.0.0.1", mode="fork") as server:
        listener_inodes = {
            os.readlink(f"/proc/self/fd/{sock.fileno()}")
            for sock in server._listener.sockets  # the parent's listening socket(s)
        }
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            report = b""
            while chunk := client.recv(65536, timeout=5):
                report += chunk
    lines = report.decode().splitlines()
    fds = {int(line.split()[1]): line.split()[2] for line in lines if line.startswith("fd ")}
    sockets = {fd: target for fd, target in fds.items() if target.startswith("socket:")}
    connection_fd = int(next(line for line in lines if line.startswith("fileno")).split()[1])
    assert set(sockets) == {connection_fd}  # no listener, no waker, nothing inherited
    assert not listener_inodes & set(sockets.values())
    # Besides 0-2 and the connection: the exit-notification pipe and log files only.
    for fd, target in fds.items():
        if fd > 2 and fd != connection_fd:
            assert target.startswith(("pipe:", "/")), (fd, target)
    assert "SIGTERM handler" in lines  # abort this connection (RST) and exit
    assert f"SIGINT {signal.SIG_IGN}" in lines  # the parent decides on Ctrl-C


def announce_pid_and_wait(stream: SocketStream) -> None:
    stream.sendall(b"%d\n" % os.getpid())
    stream.recv(1, timeout=30)


def test_a_killed_child_is_reaped_and_frees_its_slot() -> None:
    with serve(announce_pid_and_wait, 0, "127.0.0.1", mode="fork", max_connections=1) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
            pid = int(client.recv_line(timeout=5))
            assert pid in child_pids()
            os.kill(pid, signal.SIGKILL)
            try:
                assert client.recv(1, timeout=5) == b""
            except ConnectionResetError:
                pass
        killed_at = time.monotonic()
        while server.active_connections and time.monotonic() - killed_at < 2:
            time.sleep(0.01)
        assert server.active_connections == 0
        assert pid not in child_pids()
        with sockit.connect("127.0.0.1", server.port, timeout=5) as again:
            assert int(again.recv_line(timeout=5)) > 0
    assert server.stats.errors == 0


def test_the_parent_closes_its_copy_so_the_connection_ends_with_the_child() -> None:
    def greet(stream: SocketStream) -> None:
        stream.sendall(b"bye")

    with serve(greet, 0, "127.0.0.1", mode="fork") as server:
        for _ in range(3):
            with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
                assert client.recv_exactly(3) == b"bye"
                # EOF as soon as the child is done: no copy left open in the parent.
                assert client.recv(1, timeout=5) == b""


@pytest.mark.parametrize("drain", [0.0, 5.0])
def test_shutdown_reaps_every_child(drain: float) -> None:
    with serve(announce_pid_and_wait, 0, "127.0.0.1", mode="fork") as server:
        clients = [sockit.connect("127.0.0.1", server.port, timeout=5) for _ in range(5)]
        try:
            pids = {int(client.recv_line(timeout=5)) for client in clients}
            assert pids <= child_pids()
            if drain:
                for client in clients:
                    client.sendall(b"x")  # each handler returns: a graceful drain
            server.shutdown(drain_timeout=drain)
            assert not pids & child_pids()
        finally:
            for client in clients:
                client.close()
