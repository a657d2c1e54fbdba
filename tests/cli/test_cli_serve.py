"""``sockit serve`` as a real subprocess: services over TCP, UDP and UNIX sockets, exec,
the benchmark kit's command forms, logging, usage and network errors, graceful stop."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve.services import chargen_pattern

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TIMEOUT = 10.0
START_SECONDS = 20.0
ASYNC_MODE = importlib.util.find_spec("sockit.serve._async") is not None
needs_async_mode = pytest.mark.skipif(
    not ASYNC_MODE, reason="the server's async mode (sockit.serve._async) is not in this build"
)
MODES = [pytest.param("async", marks=needs_async_mode), "thread", "fork", "sequential"]
LISTENING = re.compile(r"Listening on (\S+)")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class CliServer:
    """A ``python -m sockit serve ...`` process and what it printed on stderr."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sockit", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self.stderr = b""
        self.addresses: list[str] = []

    def wait_listening(self, count: int = 1) -> list[str]:
        """Read stderr until ``count`` "Listening on ADDR" lines (event: the output)."""
        stream = self.process.stderr
        assert stream is not None
        deadline = time.monotonic() + START_SECONDS
        with selectors.DefaultSelector() as selector:
            selector.register(stream, selectors.EVENT_READ)
            while len(self.addresses) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no 'Listening on' line: {self.stderr!r}"
                if not selector.select(remaining):
                    continue
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    self.process.wait(TIMEOUT)
                    pytest.fail(f"server exited {self.process.returncode}: {self.stderr!r}")
                self.stderr += chunk
                self.addresses = LISTENING.findall(self.stderr.decode())
        return self.addresses

    @property
    def port(self) -> int:
        return int(self.addresses[0].rsplit(":", 1)[1])

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait for the exit, collect the rest of stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, rest = self.process.communicate(timeout=TIMEOUT + 10)
        self.stderr += rest
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=TIMEOUT)


@contextlib.contextmanager
def cli_server(*args: str, listening: int = 1) -> Iterator[CliServer]:
    server = CliServer(list(args))
    try:
        server.wait_listening(listening)
        yield server
        assert server.stop() == 0, server.stderr.decode()
    finally:
        server.kill()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sockit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def receive_all(stream: sockit.SocketStream) -> bytes:
    out = bytearray()
    while chunk := stream.recv(1 << 20, timeout=TIMEOUT):
        out += chunk
    return bytes(out)


def echo_round_trip(host: str, port: int) -> None:
    with sockit.connect(host, port, timeout=TIMEOUT) as client:
        client.sendall(b"hello, echo\n")
        assert client.recv_line(timeout=TIMEOUT) == b"hello, echo"
        client.send_eof()
        assert client.recv(timeout=TIMEOUT) == b""


DAYTIME = re.compile(rb"\w+day, \w+ \d{1,2}, \d{4} \d\d:\d\d:\d\d-\S+\r\n")


def check_tcp_service(name: str, host: str, port: int) -> None:
    if name == "echo":
        echo_round_trip(host, port)
        return
    with sockit.connect(host, port, timeout=TIMEOUT) as client:
        if name == "discard":
            client.sendall(b"x" * 100_000)
            client.send_eof()
            assert client.recv(timeout=TIMEOUT) == b""
        elif name == "chargen":
            period = chargen_pattern()
            assert client.recv_exactly(len(period) * 3, timeout=TIMEOUT) == period * 3
        else:
            assert DAYTIME.fullmatch(receive_all(client))


# --- services over TCP ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["echo", "discard", "chargen", "daytime"])
def test_each_service_over_tcp(name: str, mode: str) -> None:
    with cli_server(name, "127.0.0.1:0", "--mode", mode) as server:
        assert server.addresses == [f"127.0.0.1:{server.port}"]
        check_tcp_service(name, "127.0.0.1", server.port)
        check_tcp_service(name, "127.0.0.1", server.port)  # the server goes on


def test_benchmark_kit_form_echo_tcp() -> None:
    # The kit's template: sockit serve --echo tcp:{host}:{listen_port}
    with cli_server("--echo", "tcp:127.0.0.1:0") as server:
        data = os.urandom(1 << 20)
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            sender = threading.Thread(target=lambda: client.sendall(data, timeout=TIMEOUT))
            sender.start()
            assert client.recv_exactly(len(data), timeout=TIMEOUT) == data
            sender.join(TIMEOUT)
            client.send_eof()
            assert client.recv(timeout=TIMEOUT) == b""


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_benchmark_kit_form_with_an_unbracketed_ipv6_host() -> None:
    # With --ipv6 the kit fills {host} with ::1: "tcp:::1:PORT".
    with cli_server("--echo", "tcp:::1:0") as server:
        assert server.addresses == [f"[::1]:{server.port}"]
        echo_round_trip("::1", server.port)


def test_no_address_listens_on_every_address_and_says_where() -> None:
    expected = 2 if has_ipv6_loopback() else 1
    with cli_server("echo", listening=expected) as server:
        ports = {address.rsplit(":", 1)[1] for address in server.addresses}
        assert len(ports) == 1
        echo_round_trip("127.0.0.1", server.port)
        if expected == 2:
            echo_round_trip("::1", server.port)


def test_echo_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    with cli_server("echo", f"unix:{path}", "-v", "--mode", "thread") as server:
        assert server.addresses == [f"unix:{path}"]
        with sockit.connect_unix(path, timeout=TIMEOUT) as client:
            client.sendall(b"over unix\n")
            assert client.recv_line(timeout=TIMEOUT) == b"over unix"
    assert not os.path.exists(path)  # removed on exit


# --- services over UDP ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["echo", "discard", "chargen", "daytime"])
def test_each_service_over_udp(name: str) -> None:
    with cli_server(name, "--udp", "127.0.0.1:0") as server:
        with sockit.open_udp(remote=("127.0.0.1", server.port)) as client:
            client.send(b"datagram")
            if name == "discard":
                with pytest.raises(TimeoutError):
                    client.recv(timeout=0.2)  # nothing comes back: only a wait shows it
                return
            reply = client.recv(timeout=TIMEOUT)
    if name == "echo":
        assert reply == b"datagram"
    elif name == "chargen":
        assert len(reply) <= 512
        assert reply in chargen_pattern() * 2
    else:
        assert DAYTIME.fullmatch(reply)


def test_benchmark_kit_form_echo_udp() -> None:
    with cli_server("--echo", "udp:127.0.0.1:0") as server:
        with sockit.open_udp(remote=("127.0.0.1", server.port)) as client:
            for size in (0, 64, 1400):
                client.send(b"u" * size)
                assert client.recv(timeout=TIMEOUT) == b"u" * size


# --- exec ----------------------------------------------------------------------------------


def test_exec_sha256sum_100_clients_all_get_the_right_digest() -> None:
    """Acceptance: 5 MiB then a half-close, the digest back, 100 times out of 100."""
    data = os.urandom(5 << 20)
    expected = f"{hashlib.sha256(data).hexdigest()}  -\n".encode()
    correct = 0
    with cli_server("exec", "127.0.0.1:0", "--", "sha256sum") as server:
        started = time.monotonic()
        for _ in range(100):
            with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
                client.sendall(data, timeout=TIMEOUT)
                client.send_eof()
                if receive_all(client) == expected:
                    correct += 1
        elapsed = time.monotonic() - started
    assert correct == 100
    assert elapsed < 20.0


@pytest.mark.parametrize("mode", MODES)
def test_exec_environment_and_arguments(mode: str) -> None:
    script = 'echo "$1 $SOCKIT_REMOTE_ADDR $SOCKIT_REMOTE_PORT $NCAT_LOCAL_PORT $SOCKIT_PROTO"'
    args = ["exec", "127.0.0.1:0", "--mode", mode, "--", "sh", "-c", script, "sh", "hi"]
    with cli_server(*args) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            line = receive_all(client).decode()
            local = client.local_address
    assert line == f"hi 127.0.0.1 {local.port} {server.port} TCP\n"


@pytest.mark.parametrize("mode", MODES)
def test_sh_exec_and_half_close_both_ways(mode: str) -> None:
    args = ["exec", "127.0.0.1:0", "--mode", mode, "--sh-exec", "cat; echo done"]
    with cli_server(*args) as server:
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            client.sendall(b"line one\n")
            assert client.recv_line(timeout=TIMEOUT) == b"line one"
            client.send_eof()  # reaches cat's stdin; the shell's last output follows
            assert receive_all(client) == b"done\n"


def process_is_running(pid: int) -> bool:
    """False once ``pid`` is gone or a zombie (an orphan's zombie waits for init)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("mode", MODES)
def test_exec_child_is_killed_when_shutdown_aborts_its_connection(mode: str) -> None:
    args = ["exec", "127.0.0.1:0", "--mode", mode, "--drain-timeout", "0.3"]
    server = CliServer([*args, "--sh-exec", "echo $$; exec sleep 60"])
    try:
        server.wait_listening()
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            child = int(client.recv_line(timeout=TIMEOUT))
            assert process_is_running(child)
            assert server.stop() == 0, server.stderr.decode()
            # The abort resets the connection: the client never mistakes it for EOF.
            with pytest.raises(ConnectionResetError):
                client.recv(timeout=TIMEOUT)
        # No event tells an unrelated process's end; poll /proc, bounded.
        deadline = time.monotonic() + TIMEOUT
        while process_is_running(child):
            assert time.monotonic() < deadline, f"exec child {child} outlived the server"
            time.sleep(0.02)
    finally:
        server.kill()


# --- logging ---------------------------------------------------------------------------------


def test_verbose_shows_addresses_and_connections() -> None:
    with cli_server("echo", "127.0.0.1:0", "-v", "--mode", "thread") as server:
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            client.send_eof()
            assert client.recv(timeout=TIMEOUT) == b""
            client_address = str(client.local_address)
    text = server.stderr.decode()
    assert f"Listening on 127.0.0.1:{server.port}" in text
    assert client_address in text  # the connection's 4-tuple is shown


def test_verbose_udp_shows_each_peer_once() -> None:
    with cli_server("echo", "--udp", "127.0.0.1:0", "-v") as server:
        with sockit.open_udp(remote=("127.0.0.1", server.port)) as client:
            for _ in range(3):
                client.send(b"x")
                assert client.recv(timeout=TIMEOUT) == b"x"
            peer = str(client.local_address)
    text = server.stderr.decode()
    assert text.count(f"datagrams from {peer} -> 127.0.0.1:{server.port}") == 1


def test_json_log_format_is_one_object_per_line() -> None:
    with cli_server("echo", "127.0.0.1:0", "-v", "--log-format", "json") as server:
        echo_round_trip("127.0.0.1", server.port)
    lines = [line for line in server.stderr.decode().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]
    assert all({"time", "level", "event", "message"} <= set(event) for event in events)
    listening = [event for event in events if event["event"] == "listening"]
    assert listening[0]["address"] == f"127.0.0.1:{server.port}"
    assert listening[0]["protocol"] == "TCP"


def test_quiet_by_default_when_the_port_is_given() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = CliServer(["echo", f"127.0.0.1:{port}", "--mode", "thread"])
    try:
        # No output to wait for: connect until the server is up (bounded).
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                echo_round_trip("127.0.0.1", port)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert server.stop() == 0
        assert server.stderr == b""
    finally:
        server.kill()


# --- stopping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_gracefully_with_exit_0(sig: int) -> None:
    server = CliServer(["echo", "127.0.0.1:0", "--drain-timeout", "5"])
    try:
        server.wait_listening()
        with sockit.connect("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            client.sendall(b"before\n")
            assert client.recv_line(timeout=TIMEOUT) == b"before"
            server.process.send_signal(sig)
            # Draining: the open connection is still served until it ends.
            client.sendall(b"during the drain\n")
            assert client.recv_line(timeout=TIMEOUT) == b"during the drain"
            client.send_eof()
            assert client.recv(timeout=TIMEOUT) == b""
        assert server.stop() == 0
    finally:
        server.kill()


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "service is required"),
        (["ftp"], "invalid choice"),
        (["echo", "127.0.0.1:70000"], "70000"),
        (["echo", "--listen", "1", "2"], "once"),
        (["echo", "--echo", "tcp:127.0.0.1:0"], "once"),
        (["--echo", "tcp:127.0.0.1:0", "--discard", "udp:127.0.0.1:0"], "one service"),
        (["exec", "127.0.0.1:0"], "needs a program"),
        (["exec", "--sh-exec", "cat", "--", "cat"], "not both"),
        (["exec", "--", "no-such-program-anywhere"], "not found"),
        (["echo", "--", "cat"], "only goes with 'exec'"),
        (["exec", "--udp", "--", "cat"], "not UDP"),
        (["echo", "--udp", "--mode", "fork"], "--mode"),
        (["echo", "--udp", "unix:/tmp/x"], "UNIX"),
        (["echo", "--workers", "0"], "--workers"),
        (["echo", "--max-conns", "0"], "--max-conns"),
        (["echo", "--idle-timeout", "-1"], "--idle-timeout"),
        (["echo", "--drain-timeout", "nan"], "--drain-timeout"),
        (["echo", "--mode", "green"], "invalid choice"),
        (["echo", "--allow", "not-an-address", "127.0.0.1:0"], "not-an-address"),
        (["--echo", "tcp:/tmp/x"], "UNIX"),
        (["echo", "--udp", "tcp:127.0.0.1:0"], "contradicts"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("sockit serve: error: ")
    assert fragment in result.stderr


def test_port_in_use_is_a_network_error_exit_1() -> None:
    with sockit.listen(0, "127.0.0.1") as taken:
        result = run_cli("serve", "echo", f"127.0.0.1:{taken.port}")
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    assert "in use" in result.stderr


def test_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    assert "serve" in top.stdout
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for word in ("echo", "discard", "chargen", "daytime", "exec", "--sh-exec", "--mode"):
        assert word in result.stdout
