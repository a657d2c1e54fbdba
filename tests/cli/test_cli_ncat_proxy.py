"""Issue 5, acceptance 5: ``sockit --proxy`` reaches a target through a SOCKS5 proxy
(the Debian ``microsocks``) and through an HTTP CONNECT proxy run by
``sockit -l --proxy-type http``, with and without authentication; wrong credentials
are exit 1 with one line, and the credentials can come from ``NCAT_PROXY_AUTH``.

The target reads one line and answers it, then closes: microsocks ends both directions
at the first EOF from either side, so the client keeps its stdin open until the answer
arrived, and the target's close ends the client (connect mode ends at socket EOF).
Loopback only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import pytest
from peers import require_peer

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 15.0
USER, PASSWORD = "alice", "s3cret"


@contextlib.contextmanager
def line_target() -> Iterator[tuple[int, list[bytes]]]:
    """A target that answers each connection's first line with ``got LINE`` and closes;
    yields its port and the lines it got."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    lines: list[bytes] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(TIMEOUT)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\n" not in data and (chunk := conn.recv(4096)):
                        data += chunk
                    lines.append(data)
                    conn.sendall(b"got " + data)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield listener.getsockname()[1], lines
    finally:
        stop.set()
        thread.join(TIMEOUT)
        listener.close()


@contextlib.contextmanager
def process(
    argv: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
        try:
            child.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(TIMEOUT)
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int) -> None:
    """Until something accepts on 127.0.0.1:``port`` (microsocks prints nothing)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    pytest.fail(f"nothing listening on 127.0.0.1:{port}")


@contextlib.contextmanager
def socks5_proxy(*, auth: bool) -> Iterator[int]:
    executable = require_peer("microsocks", "microsocks")
    port = free_port()
    argv = [executable, "-i", "127.0.0.1", "-p", str(port)]
    if auth:
        argv += ["-u", USER, "-P", PASSWORD]
    with process(argv):
        wait_listening(port)  # microsocks serves every connection: the probe is harmless
        yield port


@contextlib.contextmanager
def http_proxy(*, auth: bool) -> Iterator[int]:
    argv = [sys.executable, "-m", "sockit", "-l", "--proxy-type", "http", "127.0.0.1", "0"]
    if auth:
        argv += ["--proxy-auth", f"{USER}:{PASSWORD}"]
    with process(argv) as proxy:
        assert proxy.stderr is not None
        line = proxy.stderr.readline().decode()
        assert "Listening on" in line, line
        yield int(line.rsplit(":", 1)[1])


def talk(
    proxy_port: int, proxy_type: str, target_port: int, *extra: str, env_auth: str | None = None
) -> tuple[int, bytes, bytes]:
    """Run ``sockit --proxy``, send a line, read the answer; (status, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("NCAT_PROXY_AUTH", None)
    if env_auth is not None:
        env["NCAT_PROXY_AUTH"] = env_auth
    argv = [sys.executable, "-m", "sockit", "--proxy", f"127.0.0.1:{proxy_port}"]
    argv += ["--proxy-type", proxy_type, *extra, "127.0.0.1", str(target_port)]
    with process(argv, env) as client:
        assert client.stdin is not None
        assert client.stdout is not None
        assert client.stderr is not None
        with contextlib.suppress(BrokenPipeError):
            client.stdin.write(b"hello through the proxy\n")
            client.stdin.flush()
        out = client.stdout.read()  # until the target closes (or the client fails)
        status = client.wait(TIMEOUT)
        return status, out, client.stderr.read()


PROXIES = {"socks5": socks5_proxy, "http": http_proxy}


@pytest.mark.parametrize("proxy_type", ["socks5", "http"])
def test_reaches_the_target_without_authentication(proxy_type: str) -> None:
    with PROXIES[proxy_type](auth=False) as proxy_port, line_target() as (port, lines):
        status, out, err = talk(proxy_port, proxy_type, port)
    assert (status, out, err) == (0, b"got hello through the proxy\n", b"")
    assert lines == [b"hello through the proxy\n"]


@pytest.mark.parametrize("proxy_type", ["socks5", "http"])
@pytest.mark.parametrize("where", ["option", "environment"])
def test_reaches_the_target_with_authentication(proxy_type: str, where: str) -> None:
    credentials = f"{USER}:{PASSWORD}"
    with PROXIES[proxy_type](auth=True) as proxy_port, line_target() as (port, lines):
        if where == "option":
            status, out, err = talk(proxy_port, proxy_type, port, "--proxy-auth", credentials)
        else:
            status, out, err = talk(proxy_port, proxy_type, port, env_auth=credentials)
    assert (status, out, err) == (0, b"got hello through the proxy\n", b"")
    assert lines == [b"hello through the proxy\n"]


@pytest.mark.parametrize("proxy_type", ["socks5", "http"])
@pytest.mark.parametrize("credentials", [None, f"{USER}:wrong"])
def test_missing_or_wrong_credentials_are_exit_1_with_one_line(
    proxy_type: str, credentials: str | None
) -> None:
    extra = [] if credentials is None else ["--proxy-auth", credentials]
    with PROXIES[proxy_type](auth=True) as proxy_port, line_target() as (port, lines):
        status, out, err = talk(proxy_port, proxy_type, port, *extra)
    assert status == 1
    assert out == b""
    message = err.decode().splitlines()
    assert len(message) == 1, message
    assert f"127.0.0.1:{proxy_port}" in message[0]
    assert "wrong" not in message[0]  # the password is never printed
    assert lines == []


def test_a_proxy_that_is_down_is_exit_1_naming_it() -> None:
    with line_target() as (port, _):
        status, out, err = talk(free_port(), "socks5", port)
    assert status == 1
    assert out == b""
    assert "127.0.0.1:" in err.decode()
    assert len(err.decode().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--proxy", "127.0.0.1:1080", "-l", "0"], "-l"),
        (["--proxy", "127.0.0.1:1080", "-u", "127.0.0.1", "9"], "TCP"),
        (["--proxy", "127.0.0.1:1080", "--proxy-type", "socks6", "127.0.0.1", "9"], "socks6"),
        (["--proxy", "127.0.0.1:1080", "--proxy-dns", "maybe", "127.0.0.1", "9"], "maybe"),
        (["--proxy-dns", "local", "127.0.0.1", "9"], "--proxy"),
    ],
)
def test_bad_proxy_options_are_usage_errors(args: list[str], fragment: str) -> None:
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
