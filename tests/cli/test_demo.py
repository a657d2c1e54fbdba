"""The ``sockit`` command: demo, --version, usage errors (run as real subprocesses)."""

from __future__ import annotations

import re
import subprocess
import sys

import sockit


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sockit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_shows_the_socket_model_step_by_step() -> None:
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    port = re.search(r"the kernel chose port (\d+)", out)
    assert port is not None
    assert f"0.0.0.0:{port[1]}" in out
    # The order of the model: getaddrinfo, bind, listen, connect, accept with the
    # 4-tuple, data each way, half-close, EOF, close.
    steps = [
        "getaddrinfo(None, 0, AI_PASSIVE)",
        "bind(",
        "listen()",
        "getaddrinfo('localhost'",
        "connect()",
        "socket pair (the 4-tuple): client 127.0.0.1:",
        "recv() -> b'hello, server'",
        "send(b'HELLO, SERVER\\n')",
        "shutdown(SHUT_WR)",
        "recv() -> b'': EOF, the client half-closed",
        "sending still works after the client's FIN",
        "recv() -> b'': EOF, the server closed",
        "close()",
    ]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions.index(positions[6]) == 6
    assert out.index("shutdown(SHUT_WR)") < out.index("EOF, the client half-closed")


def test_demo_unresolvable_host_is_one_line_and_exit_1() -> None:
    result = _run("demo", "--host", "x" * 300)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "cannot resolve" in result.stderr


def test_version_and_usage() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sockit {sockit.__version__}"
    result = _run()
    assert result.returncode == 2
    assert "command is required" in result.stderr
    result = _run("--no-such-option")
    assert result.returncode == 2
