"""exec_handler / sh_exec_handler: a real child per real connection.

Each test serves one connection (``listen``/``accept`` in a thread) with the handler and
checks what the child got (environment, signals, file descriptors, stdin) and what the
client sees (output, EOF in both directions, the end of an aborted connection).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve.exec import (
    ExecHandler,
    connection_environment,
    exec_handler,
    sh_exec_handler,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TIMEOUT = 10.0
PYTHON = sys.executable


class ServedOnce:
    """One connection handled in a thread; records the handler's exception and end."""

    def __init__(self, handler: Callable[[sockit.SocketStream], None]) -> None:
        self.handler = handler
        self.error: BaseException | None = None
        self.stream: sockit.SocketStream | None = None
        self.accepted = threading.Event()
        self.done = threading.Event()

    def run(self, listener: sockit.SocketListener) -> None:
        try:
            with listener.accept(timeout=TIMEOUT) as stream:
                self.stream = stream
                self.accepted.set()
                self.handler(stream)
        except BaseException as error:  # handed to the test
            self.error = error
        finally:
            self.done.set()


@contextlib.contextmanager
def serve_once(
    handler: Callable[[sockit.SocketStream], None], *, unix_path: str | None = None
) -> Iterator[tuple[ServedOnce, sockit.SocketStream]]:
    """Yield (outcome, connected client) for one connection served by ``handler``."""
    listener = sockit.listen_unix(unix_path) if unix_path else sockit.listen(0, "127.0.0.1")
    served = ServedOnce(handler)
    thread = threading.Thread(target=served.run, args=(listener,))
    thread.start()
    try:
        if unix_path:
            client = sockit.connect_unix(unix_path, timeout=TIMEOUT)
        else:
            client = sockit.connect("127.0.0.1", listener.port, timeout=TIMEOUT)
        with client:
            yield served, client
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert not thread.is_alive()
    if served.error is not None:
        raise served.error


def receive_all(stream: sockit.SocketStream) -> bytes:
    out = bytearray()
    while chunk := stream.recv(1 << 20, timeout=TIMEOUT):
        out += chunk
    return bytes(out)


def send_then_eof(client: sockit.SocketStream, data: bytes) -> threading.Thread:
    """Send ``data`` and EOF from a thread, so the test reads at the same time."""

    def send() -> None:
        client.sendall(data, timeout=TIMEOUT)
        client.send_eof()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def python_child(code: str) -> ExecHandler:
    return exec_handler([PYTHON, "-c", code])


# --- what the child gets --------------------------------------------------------------------


def test_environment_describes_the_connection() -> None:
    handler = sh_exec_handler("env")
    with serve_once(handler) as (_, client):
        client.send_eof()
        output = receive_all(client).decode()
        local, remote = client.local_address, client.remote_address
    variables = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    for prefix in ("SOCKIT_", "NCAT_"):
        assert variables[prefix + "PROTO"] == "TCP"
        # The child's remote is the client's local end, and the other way round.
        assert variables[prefix + "REMOTE_ADDR"] == local.host == "127.0.0.1"
        assert variables[prefix + "REMOTE_PORT"] == str(local.port)
        assert variables[prefix + "LOCAL_ADDR"] == remote.host
        assert variables[prefix + "LOCAL_PORT"] == str(remote.port)


def test_sh_exec_expands_the_variables() -> None:
    with serve_once(sh_exec_handler('echo "$SOCKIT_REMOTE_PORT"')) as (_, client):
        assert receive_all(client) == f"{client.local_address.port}\n".encode()


def test_environment_over_unix_has_no_ports(tmp_path: Path) -> None:
    path = str(tmp_path / "exec.sock")
    with serve_once(sh_exec_handler("env"), unix_path=path) as (_, client):
        output = receive_all(client).decode()
    variables = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert variables["SOCKIT_PROTO"] == variables["NCAT_PROTO"] == "UNIX"
    assert variables["SOCKIT_LOCAL_ADDR"] == path
    assert variables["SOCKIT_REMOTE_ADDR"] == ""  # the client never bound a name
    assert not {"SOCKIT_LOCAL_PORT", "SOCKIT_REMOTE_PORT", "NCAT_LOCAL_PORT"} & set(variables)


def test_extra_environment_and_stale_connection_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOCKIT_REMOTE_PORT", "stale")
    handler = exec_handler(
        ["sh", "-c", 'echo "$GREETING $SOCKIT_REMOTE_PORT"'], env={"GREETING": "hi"}
    )
    with serve_once(handler) as (_, client):
        assert receive_all(client) == f"hi {client.local_address.port}\n".encode()


def test_no_shell_unless_asked() -> None:
    # Shell syntax in argv is passed to the program as it is, not interpreted.
    handler = exec_handler(["echo", "$HOME", ";", "id"])
    with serve_once(handler) as (_, client):
        assert receive_all(client) == b"$HOME ; id\n"


STATUS_SIGNALS = ["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]


def test_child_has_default_signal_dispositions_and_an_empty_mask() -> None:
    # Python itself ignores SIGPIPE and SIGXFSZ: the child must not inherit that.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    with serve_once(exec_handler(STATUS_SIGNALS)) as (_, client):
        output = receive_all(client).decode()
    assert output.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


def test_signals_ignored_or_blocked_in_the_server_are_reset_in_the_child() -> None:
    """nohup ignores SIGHUP, a shell's & ignores SIGINT; a thread may block signals."""
    original = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:

        def blocking_handler(stream: sockit.SocketStream) -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            exec_handler(STATUS_SIGNALS)(stream)

        with serve_once(blocking_handler) as (_, client):
            output = receive_all(client).decode()
    finally:
        signal.signal(signal.SIGHUP, original)
    assert output.split() == ["SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000"]


LIST_FDS = """
import os, stat
def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
# The directory's own fd is in the listing but closed by the time it is checked.
fds = sorted(fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd))
kinds = {fd: stat.S_ISSOCK(os.fstat(fd).st_mode) for fd in (0, 1)}
print(fds, kinds[0], stat.S_ISFIFO(os.fstat(1).st_mode), flush=True)
"""


def test_child_gets_only_fds_0_1_2_even_with_inheritable_fds_around() -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)  # like a socket adopted from systemd (fd 3...)
    try:
        with serve_once(python_child(LIST_FDS)) as (_, client):
            output = receive_all(client).decode()
    finally:
        os.close(read_end)
        os.close(write_end)
    # stdin is the socket itself, stdout a pipe the server copies from.
    assert output == "[0, 1, 2] True True\n"


def test_child_stdin_is_blocking_even_when_the_stream_had_a_timeout() -> None:
    """O_NONBLOCK is shared with the child's stdin: it must be off for the child."""

    def with_timeout(stream: sockit.SocketStream) -> None:
        stream.timeout = 5.0  # the socket is now in non-blocking mode internally
        stream.recv(1)  # ... and really was used that way
        exec_handler(["cat"])(stream)
        assert stream.socket.gettimeout() == 5.0  # restored for the server

    with serve_once(with_timeout) as (_, client):
        client.sendall(b"!")
        time.sleep(0.05)  # let cat block in read(): the case O_NONBLOCK would break
        client.sendall(b"slow data")
        client.send_eof()
        assert receive_all(client) == b"slow data"


# --- half-close both ways ---------------------------------------------------------------------


def test_cat_child_echoes_everything_then_eof() -> None:
    data = os.urandom(4 << 20)
    with serve_once(exec_handler(["cat"])) as (_, client):
        sender = send_then_eof(client, data)
        received = receive_all(client)
        sender.join(TIMEOUT)
    assert received == data


def test_client_eof_reaches_the_child_and_its_output_still_arrives() -> None:
    data = os.urandom(5 << 20)
    with serve_once(exec_handler(["sha256sum"])) as (_, client):
        client.sendall(data)
        client.send_eof()
        reply = receive_all(client)
    assert reply == f"{hashlib.sha256(data).hexdigest()}  -\n".encode()


def test_child_closing_stdout_sends_eof_while_it_keeps_reading(tmp_path: Path) -> None:
    out = tmp_path / "after-eof"
    # The child answers, closes its stdout, then reads the rest of its input.
    handler = sh_exec_handler(f"echo ready; exec 1>&-; cat > {out}")
    with serve_once(handler) as (_, client):
        assert client.recv_line(timeout=TIMEOUT) == b"ready"
        # EOF while the client has not half-closed, and the child is still running.
        assert client.recv(timeout=TIMEOUT) == b""
        client.sendall(b"sent after the child's EOF")
        client.send_eof()
    assert out.read_bytes() == b"sent after the child's EOF"


def test_child_exit_sends_eof_without_waiting_for_the_client() -> None:
    with serve_once(exec_handler(["echo", "hello"])) as (served, client):
        assert receive_all(client) == b"hello\n"  # the client never half-closed
    assert served.done.is_set()


def test_bytes_already_buffered_by_the_server_reach_the_child() -> None:
    """A server that read past a header (PROXY protocol) hands the rest to the child."""

    def after_header(stream: sockit.SocketStream) -> None:
        assert stream.recv_line(timeout=TIMEOUT) == b"HEADER"
        # The tail came in the same read: it is in the stream's buffer, not the socket.
        assert stream._buffer
        exec_handler(["cat"])(stream)

    payload = os.urandom(1 << 20)
    with serve_once(after_header) as (_, client):
        # One small send arrives as one segment on loopback, read in one go.
        client.sendall(b"HEADER\nbuffered-with-the-header")
        sender = send_then_eof(client, payload)
        received = receive_all(client)
        sender.join(TIMEOUT)
    assert received == b"buffered-with-the-header" + payload


# --- failures and aborts -------------------------------------------------------------------


def test_missing_program_is_logged_and_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="sockit.serve")
    with serve_once(exec_handler(["/nonexistent/program"])) as (_, client):
        assert receive_all(client) == b""
    assert any("/nonexistent/program" in record.getMessage() for record in caplog.records)


def test_aborted_connection_kills_and_reaps_the_child() -> None:
    handler = exec_handler(["sh", "-c", "echo up; exec sleep 60"], kill_grace=1.0)
    with serve_once(handler) as (served, client):
        assert client.recv_line(timeout=TIMEOUT) == b"up"  # the child is running
        stream = served.stream
        assert stream is not None
        started = time.monotonic()
        stream.abort()  # what a server's shutdown does after its drain timeout
        assert served.done.wait(TIMEOUT)
        # SIGTERM ends sleep at once; the check interval bounds the delay.
        assert time.monotonic() - started < 2.0
        with pytest.raises(ConnectionResetError):
            receive_all(client)
    # The leak check of tests/conftest.py fails the test if the child was not reaped.


def test_a_child_ignoring_sigterm_gets_sigkill_after_the_grace_period() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    handler = python_child(code)
    handler.kill_grace = 0.3
    with serve_once(handler) as (served, client):
        assert client.recv_line(timeout=TIMEOUT) == b"up"
        stream = served.stream
        assert stream is not None
        started = time.monotonic()
        stream.abort()
        assert served.done.wait(TIMEOUT)
        assert 0.3 <= time.monotonic() - started < 3.0


def test_interrupting_the_handler_kills_the_child() -> None:
    def interrupted(stream: sockit.SocketStream) -> None:
        timer = threading.Timer(0.2, stream.abort)
        timer.start()
        try:
            exec_handler(["sleep", "60"])(stream)
        finally:
            timer.join()

    with serve_once(interrupted) as (served, _):
        assert served.done.wait(TIMEOUT)


def test_client_reset_ends_a_writing_child() -> None:
    handler = exec_handler(["yes"])  # writes forever
    with serve_once(handler) as (served, client):
        assert client.recv(timeout=TIMEOUT).startswith(b"y\n")
        client.abort()
        # The copy to the socket fails, the pipe is closed, yes dies of SIGPIPE.
        assert served.done.wait(TIMEOUT)


def test_exit_status_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sockit.serve")
    with serve_once(sh_exec_handler("exit 3")) as (_, client):
        assert receive_all(client) == b""
    exits = [r for r in caplog.records if getattr(r, "event", None) == "exec_exited"]
    assert len(exits) == 1
    assert exits[0].__dict__["status"] == 3


# --- API --------------------------------------------------------------------------------------


def test_argument_checks() -> None:
    with pytest.raises(TypeError):
        exec_handler("cat")  # a string is not an argv
    with pytest.raises(ValueError):
        exec_handler([])
    with pytest.raises(ValueError):
        exec_handler(["cat"], kill_grace=-1)
    with pytest.raises(TypeError):
        sh_exec_handler(["echo"])  # type: ignore[arg-type]
    assert sh_exec_handler("echo hi").argv == ("/bin/sh", "-c", "echo hi")
    assert "cat" in repr(exec_handler(["cat"]))


def test_connection_environment_values() -> None:
    local = sockit.SocketAddress.from_sockaddr(10, ("::1", 7, 0, 0))
    remote = sockit.SocketAddress.from_sockaddr(2, ("127.0.0.1", 5000))
    environment = connection_environment(local, remote, "TCP")
    assert json.loads(json.dumps(environment)) == {
        "SOCKIT_PROTO": "TCP",
        "SOCKIT_LOCAL_ADDR": "::1",
        "SOCKIT_LOCAL_PORT": "7",
        "SOCKIT_REMOTE_ADDR": "127.0.0.1",
        "SOCKIT_REMOTE_PORT": "5000",
        "NCAT_PROTO": "TCP",
        "NCAT_LOCAL_ADDR": "::1",
        "NCAT_LOCAL_PORT": "7",
        "NCAT_REMOTE_ADDR": "127.0.0.1",
        "NCAT_REMOTE_PORT": "5000",
    }
    assert connection_environment(None, None, "UDP") == {"SOCKIT_PROTO": "UDP", "NCAT_PROTO": "UDP"}
