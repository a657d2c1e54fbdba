"""Issue 5, acceptance 6: ``sockit -z`` over a range of 1,000 loopback ports reports the
open ones correctly, through the command line (the scanner itself is tested in
tests/relay/test_relay_scan.py).

The test reserves a window of 1,000 consecutive ports on 127.0.0.1 below the ephemeral
range (bound sockets, so nothing else takes them and a connect to one is refused), makes
a random few of them listen, and checks that ``sockit -z -v`` names exactly those.
Ports of the window some other program holds are left out of the checks.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

WINDOW = 1000
LISTENING = 25
TIMEOUT = 60.0


def _reserve(port: int) -> socket.socket | None:
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


@contextlib.contextmanager
def port_window() -> Iterator[tuple[int, dict[int, socket.socket]]]:
    """``WINDOW`` consecutive ports below the ephemeral range (so no connect of the scan
    gets one as its source port), at least 90 % of them reserved here."""
    text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
    low = int(text.split()[0])
    top = low - WINDOW if low - WINDOW > 10_000 else 65535 - WINDOW
    for _ in range(10):
        base = random.randrange(10_000, top)
        reserved: dict[int, socket.socket] = {}
        try:
            for port in range(base, base + WINDOW):
                sock = _reserve(port)
                if sock is not None:
                    reserved[port] = sock
            if len(reserved) >= WINDOW * 9 // 10:
                yield base, reserved
                return
        finally:
            for sock in reserved.values():
                sock.close()
    pytest.skip("no window of 1,000 loopback ports with 90 % of them free")


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sockit", "-z", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_a_range_of_1000_ports_reports_exactly_the_open_ones() -> None:
    with port_window() as (base, reserved):
        chosen = sorted(random.sample(sorted(reserved), LISTENING))
        for port in chosen:
            reserved[port].listen(8)
        result = scan("-v", "127.0.0.1", f"{base}-{base + WINDOW - 1}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # -z sends and prints no data
    reported = [
        int(port) for port in re.findall(r"Connected to 127\.0\.0\.1:(\d+)\.", result.stderr)
    ]
    assert [port for port in reported if port in reserved] == chosen
    summary = re.search(r"(\d+) of (\d+) ports open\.", result.stderr)
    assert summary is not None, result.stderr
    assert int(summary.group(2)) == WINDOW
    # Ports outside our reservation may be open (another program's): at least ours.
    assert int(summary.group(1)) == len(reported) >= LISTENING


def test_without_v_it_is_quiet_and_the_status_says_whether_any_is_open() -> None:
    with port_window() as (_base, reserved):
        ports = sorted(reserved)[:50]
        spec = ",".join(str(port) for port in ports)
        closed = scan("127.0.0.1", spec)
        reserved[ports[7]].listen(1)
        opened = scan("127.0.0.1", spec)
    assert (closed.returncode, closed.stdout, closed.stderr) == (1, "", "")
    assert (opened.returncode, opened.stdout, opened.stderr) == (0, "", "")
