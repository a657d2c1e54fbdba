"""ncat mode's remaining options over real sockets (subprocesses, loopback only):
``--chat`` (ncat's exact announce lines and tags, control bytes escaped), ``--broker``
backpressure, ``--allow``/``--deny`` and their files in every listen mode, ``-d`` and
``--buffer-size``."""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 15.0
SOCKIT = (sys.executable, "-m", "sockit")


@contextlib.contextmanager
def sockit_listening(
    *args: str, host: str = "127.0.0.1", stdin: int | None = subprocess.PIPE
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``sockit -l ARGS HOST 0``; yields the process and the port it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "-l", *args, host, "0"],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        assert "Listening on" in line, line
        yield process, int(line.rsplit(":", 1)[1])
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


def connect(port: int, source: str = "127.0.0.1", *, udp: bool = False) -> socket.socket:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_until(sock: socket.socket, wanted: bytes) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while wanted not in data and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def refused(sock: socket.socket) -> bool:
    """Whether the server reset ``sock`` (an allow/deny refusal) instead of serving it."""
    sock.settimeout(5.0)
    try:
        sock.sendall(b"knock")
        sock.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False  # served: data or a clean end


# --- chat and broker -----------------------------------------------------------------------


def test_chat_announces_tags_lines_and_escapes_control_bytes() -> None:
    with sockit_listening("--chat") as (_, port), connect(port) as first:
        hello = b"<announce> 127.0.0.1 is connected as <user1>.\n"
        nobody = b"<announce> already connected: nobody.\n"
        assert read_until(first, nobody) == hello + nobody
        with connect(port) as second:
            arrival = b"<announce> 127.0.0.1 is connected as <user2>.\n"
            others = b"<announce> already connected: 127.0.0.1 as <user1>.\n"
            assert read_until(second, others) == arrival + others
            assert read_until(first, arrival) == arrival
            # ESC and BEL could recolour or beep another's terminal: escaped as ncat does.
            first.sendall(b"hi \x1b[31mred\x07\tok\nsecond line\npart")
            expected = b"<user1> hi \\033[31mred\\007\tok\n<user1> second line\n<user1> part"
            assert read_until(second, b"part") == expected
            first.sendall(b" two\n")  # the rest of a line: no second tag
            assert read_until(second, b"two\n") == b" two\n"
        assert read_until(first, b"disconnected.\n") == b"<announce> <user2> is disconnected.\n"


def test_broker_relays_between_clients_and_never_to_the_sender() -> None:
    with (
        sockit_listening("--broker") as (process, port),
        connect(port) as one,
        connect(port) as two,
        connect(port) as three,
    ):
        time.sleep(0.3)  # all three accepted before the first byte (else it is missed)
        one.sendall(b"from one")
        assert read_until(two, b"one") == b"from one"
        assert read_until(three, b"one") == b"from one"
        one.settimeout(0.3)
        with pytest.raises(TimeoutError):
            one.recv(100)
        assert process.poll() is None


def test_broker_pauses_senders_while_a_client_does_not_read() -> None:
    """A client that never reads holds everyone's talk back (bounded memory) and loses
    nothing: when it reads again, every byte the sender got accepted arrives."""
    with sockit_listening("--broker") as (_, port), connect(port) as talker:
        with connect(port) as sleeper:
            time.sleep(0.3)
            talker.setblocking(False)
            sent = 0
            block = b"z" * 65536
            deadline = time.monotonic() + 5.0
            stalled_since = None
            while time.monotonic() < deadline and sent < 64 << 20:
                try:
                    sent += talker.send(block)
                    stalled_since = None
                except BlockingIOError:
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > 1.0:
                        break  # the broker stopped reading the talker: paused
                    time.sleep(0.01)
            # Held back by the sleeper: far less than 64 MiB got in (socket buffers plus
            # the broker's bounded per-client queue).
            assert sent < 32 << 20, sent
            received = 0
            while received < sent:
                chunk = sleeper.recv(1 << 20)
                assert chunk, "EOF before every accepted byte arrived"
                assert chunk == b"z" * len(chunk)
                received += len(chunk)
                with contextlib.suppress(BlockingIOError):
                    sent += talker.send(block) if sent < 64 << 20 else 0
            assert received == sent


# --- allow and deny --------------------------------------------------------------------------


def test_allow_serves_only_listed_peers_in_one_shot_listen() -> None:
    with sockit_listening("--allow", "127.0.0.2") as (process, port):
        with connect(port, "127.0.0.1") as stranger:
            assert refused(stranger)
        assert process.poll() is None  # still waiting for an allowed peer
        with connect(port, "127.0.0.2") as friend:
            friend.sendall(b"let me in")
            friend.shutdown(socket.SHUT_WR)
            assert process.stdin is not None
            process.stdin.write(b"welcome")
            process.stdin.close()
            assert read_to_eof(friend) == b"welcome"
        assert process.wait(TIMEOUT) == 0
        assert process.stdout is not None
        assert process.stdout.read() == b"let me in"


def test_deny_and_denyfile_refuse_in_the_keep_open_hub(tmp_path: Path) -> None:
    denied = tmp_path / "denied"
    denied.write_text("# loopback aliases we refuse\n127.0.0.3\n127.0.0.4/32  # and this\n")
    with sockit_listening(
        "-k", "--deny", "127.0.0.2", "--denyfile", str(denied), stdin=subprocess.DEVNULL
    ) as (process, port):
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            with connect(port, source) as stranger:
                assert refused(stranger), source
        with connect(port, "127.0.0.5") as friend:
            friend.sendall(b"hello hub\n")
            assert process.stdout is not None
            assert process.stdout.readline() == b"hello hub\n"


def test_allowfile_applies_to_keep_open_exec(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.write_text("127.0.0.2\n")
    with sockit_listening("-k", "--allowfile", str(allowed), "-e", "/bin/cat") as (_, port):
        with connect(port, "127.0.0.1") as stranger:
            assert refused(stranger)
        with connect(port, "127.0.0.2") as friend:
            friend.sendall(b"echo me")
            friend.shutdown(socket.SHUT_WR)
            assert read_to_eof(friend) == b"echo me"


def test_deny_applies_to_the_listening_http_proxy() -> None:
    with sockit_listening("--proxy-type", "http", "--deny", "127.0.0.1") as (_, port):
        with connect(port, "127.0.0.1") as stranger:
            assert refused(stranger)
        with connect(port, "127.0.0.2") as friend:
            friend.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
            assert read_until(friend, b"\r\n").startswith(b"HTTP/1.0 50")


def test_allow_picks_the_udp_peer() -> None:
    with sockit_listening("-u", "--allow", "127.0.0.2") as (process, port):
        with connect(port, "127.0.0.1", udp=True) as stranger:
            stranger.send(b"ignored\n")
        with connect(port, "127.0.0.2", udp=True) as friend:
            friend.send(b"heard\n")
            assert process.stdout is not None
            assert process.stdout.readline() == b"heard\n"
            assert process.stdin is not None
            process.stdin.write(b"reply\n")
            process.stdin.flush()
            assert friend.recv(100) == b"reply\n"


def test_allow_with_a_host_name_resolves_it() -> None:
    with sockit_listening("-k", "--allow", "localhost", "-e", "/bin/cat") as (_, port):
        with connect(port, "127.0.0.1") as friend:
            friend.sendall(b"named")
            friend.shutdown(socket.SHUT_WR)
            assert read_to_eof(friend) == b"named"
        with connect(port, "127.0.0.2") as stranger:
            assert refused(stranger)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--allow", "127.0.0.1", "127.0.0.1", "9"], "listen modes"),
        (["-l", "-U", "--deny", "127.0.0.1", "/tmp/sockit-never"], "listen modes"),
        (["-l", "--allow", "not an address!", "0"], "not an IP address"),
        (["-l", "-n", "--allow", "localhost", "0"], "not an IP address"),
        (["-l", "--allowfile", "/nonexistent/sockit-allow", "0"], "cannot read"),
        (["-l", "--buffer-size", "0", "0"], "--buffer-size"),
        (["-l", "-d", "soon", "0"], "soon"),
    ],
)
def test_bad_access_and_buffer_options_are_usage_errors(args: list[str], fragment: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sockit", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert fragment in lines[0]


# --- -d and --buffer-size ------------------------------------------------------------------


def serve_once(payload: bytes) -> tuple[socket.socket, threading.Thread, list[bytes]]:
    """A one-connection server sending ``payload`` at once, then reading to EOF."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    got: list[bytes] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            got.append(read_to_eof(conn))

    thread = threading.Thread(target=run)
    thread.start()
    return listener, thread, got


def test_delay_waits_between_reads_of_buffer_size() -> None:
    listener, thread, got = serve_once(b"abcd")
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*SOCKIT, "-d", "250ms", "--buffer-size", "1", "127.0.0.1", str(port)],
            input=b"",
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        thread.join(TIMEOUT)
        listener.close()
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"abcd"
    assert got == [b""]
    # Four one-byte reads with 250 ms after each of the first three: at least 0.75 s
    # (a lower bound only: a busy machine can make it longer, never shorter).
    assert elapsed >= 0.75


def test_small_buffer_size_delivers_every_byte_both_ways() -> None:
    payload = bytes(range(256)) * 800
    listener, thread, got = serve_once(payload[::-1])
    port = listener.getsockname()[1]
    try:
        result = subprocess.run(
            [*SOCKIT, "--buffer-size", "333", "127.0.0.1", str(port)],
            input=payload,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload[::-1]
    assert got == [payload]


def test_basic_auth_env_is_not_echoed_in_errors() -> None:
    """NCAT_PROXY_AUTH without a colon is a usage error that never prints the secret."""
    secret = base64.b64encode(b"do-not-print").decode()
    result = subprocess.run(
        [sys.executable, "-m", "sockit", "-l", "--proxy-type", "http", "127.0.0.1", "0"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        env={"NCAT_PROXY_AUTH": secret, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert secret not in result.stderr.decode()


def test_exec_child_gets_the_ncat_and_sockit_environment() -> None:
    command = 'env | grep -E "^(NCAT|SOCKIT)_" | sort'
    with sockit_listening("-c", command, stdin=subprocess.DEVNULL) as (process, port):
        with connect(port) as client:
            client.shutdown(socket.SHUT_WR)
            local_port = client.getsockname()[1]
            text = read_to_eof(client).decode()
        assert process.wait(TIMEOUT) == 0
    expected = {
        "LOCAL_ADDR": "127.0.0.1",
        "LOCAL_PORT": str(port),
        "PROTO": "TCP",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": str(local_port),
    }
    lines = text.splitlines()
    assert lines == sorted(
        f"{prefix}_{key}={value}"
        for prefix in ("NCAT", "SOCKIT")
        for key, value in expected.items()
    )
