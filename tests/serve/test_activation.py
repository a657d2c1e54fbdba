"""Socket activation over real processes: systemd LISTEN_FDS and inetd-style fd 0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sockit
from sockit.serve.activation import ActivationError, inetd_socket, systemd_listeners

# A child that adopts its sockets and echoes one line per connection, reporting what it
# adopted on stderr.
_CHILD = textwrap.dedent(
    """
    import os, sys
    from sockit.serve.activation import systemd_listeners, inetd_socket
    from sockit import SocketListener
    how = sys.argv[1]
    if how == "systemd":
        adopted = systemd_listeners()
        print("left:", os.environ.get("LISTEN_FDS"), file=sys.stderr)
    else:
        adopted = inetd_socket(0)
    print("adopted:", type(adopted).__name__, file=sys.stderr, flush=True)
    if isinstance(adopted, SocketListener):
        with adopted, adopted.accept(timeout=10) as stream:
            stream.sendall(stream.recv_line(timeout=10).upper() + b"\\n")
    else:
        with adopted:
            adopted.sendall(adopted.recv_line(timeout=10).upper() + b"\\n")
    """
)

# Moves the listening socket to fd 3, sets the variables for its own pid, then execs
# the child: exec keeps the pid, as systemd's own fork+exec does.
_SYSTEMD_WRAPPER = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    os.dup2(fd, 3)
    os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_FDNAMES"] = "echo"
    os.execv(sys.executable, [sys.executable, sys.argv[2], "systemd"])
    """
)


def _ask(port: int) -> bytes:
    with sockit.connect("127.0.0.1", port, timeout=10) as stream:
        stream.sendall(b"hello\n")
        return stream.recv_line(timeout=10)


def test_systemd_listen_fds(tmp_path: Path) -> None:
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    with sockit.listen(0, "127.0.0.1") as listener:
        sock = listener.sockets[0]
        process = subprocess.Popen(
            [sys.executable, "-c", _SYSTEMD_WRAPPER, str(sock.fileno()), str(child)],
            pass_fds=(sock.fileno(),),
            stderr=subprocess.PIPE,
        )
        try:
            assert _ask(listener.port) == b"HELLO"
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr
    assert b"adopted: SocketListener" in stderr
    assert b"left: None" in stderr  # the variables are not passed on to children


@pytest.mark.parametrize("mode", ["wait", "nowait"])
def test_inetd_fd_zero(tmp_path: Path, mode: str) -> None:
    child = tmp_path / "child.py"
    child.write_text(_CHILD)
    with sockit.listen(0, "127.0.0.1") as listener:
        if mode == "wait":  # fd 0 is the listening socket
            stdin_sock = listener.sockets[0]
            client = None
        else:  # fd 0 is one connected socket
            client = sockit.connect("127.0.0.1", listener.port, timeout=10)
            stdin_sock = listener.accept(timeout=10).socket
        process = subprocess.Popen(
            [sys.executable, str(child), "inetd"], stdin=stdin_sock.fileno(), stderr=subprocess.PIPE
        )
        try:
            if client is None:
                assert _ask(listener.port) == b"HELLO"
            else:
                stdin_sock.close()  # the child has its own copy now
                with client:
                    client.sendall(b"hello\n")
                    assert client.recv_line(timeout=10) == b"HELLO"
            _, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    expected = b"SocketListener" if mode == "wait" else b"SocketStream"
    assert process.returncode == 0, stderr
    assert b"adopted: " + expected in stderr


def test_not_activated_and_foreign_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    assert systemd_listeners() is None
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    assert systemd_listeners() is None  # meant for another process


def test_bad_activation_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "many")
    with pytest.raises(ActivationError, match="not a number"):
        systemd_listeners()
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(ActivationError, match="not a socket"):
            inetd_socket(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ActivationError, match="not a stream socket"):
            inetd_socket(udp.fileno())
