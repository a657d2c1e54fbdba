"""Real peer programs for interop tests: find one or skip (fail under CI); watch its sockets.

Use it from a test module in this directory with ``from peers import require_peer``
(pytest puts a test module's own directory on ``sys.path``; a module in another test
directory adds ``tests/cli`` to ``sys.path`` first, as tests/relay/test_relay_haproxy.py
does for tests/serve). A helper module, not a ``conftest.py``: see tests/serve/haproxy.py
for why a second conftest does not work here.

The peers are Debian packages that ``python3 dev.py test`` installs when it can (root and
apt-get; see ``TEST_PEERS`` in dev.py). Without one, :func:`require_peer` skips the test
with the reason, except in CI (environment variable ``CI`` set), where a missing peer is
a failure: an interop suite that silently skips proves nothing.

:func:`is_listening` (is a peer ready?) and :func:`received_fin` (did a half-close
arrive?) read the kernel's socket tables (``/proc/net/tcp``, ``udp``, ``unix``) instead
of probing with a connect or a datagram, which a one-connection peer would take as its
client: this module must never touch a peer's socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

# TCP states in include/net/tcp_states.h, as /proc/net/tcp prints them.
_TCP_LISTEN = "0A"
_TCP_CLOSE_WAIT = "08"  # this end received a FIN, and its owner has not closed it yet
_UNIX_ACCEPTCON = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags: a listening socket
_IPV4_LOOPBACK_OR_ANY = {"0100007F", "00000000"}  # 127.0.0.1 and 0.0.0.0, host order


def require_peer(command: str, package: str) -> str:
    """The path of ``command``; skip the test if it is not on PATH (fail if ``CI`` is set).

    ``package`` is the Debian package that provides it, named in the reason.
    """
    executable = shutil.which(command)
    if executable is None:
        reason = (
            f"{command} is not installed (python3 dev.py test installs the Debian package "
            f"{package!r} when run as root with apt-get; or: apt-get install {package})"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the interop tests must run", pytrace=False)
        pytest.skip(reason)
    return executable


def _ipv4_ports(table: str, *, listening: bool) -> set[int]:
    """Local ports on 127.0.0.1 or 0.0.0.0 in ``/proc/net/<table>`` (tcp or udp)."""
    ports: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net", table).read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            address, _, port = fields[1].partition(":")
            if address in _IPV4_LOOPBACK_OR_ANY and (not listening or fields[3] == _TCP_LISTEN):
                ports.add(int(port, 16))
    return ports


def _tcp_table() -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of every IPv4 TCP socket (``/proc/net/tcp``)."""
    rows: list[tuple[int, int, str]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            local, remote = (int(field.rpartition(":")[2], 16) for field in fields[1:3])
            rows.append((local, remote, fields[3]))
    return rows


def received_fin(port: int) -> bool:
    """Whether an IPv4 TCP connection with ``port`` at either end is in CLOSE_WAIT: one
    end has received its peer's FIN (a half-close, or a close) and is still open."""
    return any(
        port in (local, remote) and state == _TCP_CLOSE_WAIT
        for local, remote, state in _tcp_table()
    )


def _unix_listening_paths() -> set[str]:
    """Paths of listening UNIX sockets (``/proc/net/unix``)."""
    paths: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net/unix").read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and int(fields[3], 16) & _UNIX_ACCEPTCON:
                paths.add(fields[7])
    return paths


def is_listening(transport: str, where: int | str) -> bool:
    """Whether something listens on ``where``: a port on 127.0.0.1 (or the IPv4 wildcard)
    for ``"tcp"``, a bound port for ``"udp"``, a socket path for ``"unix"``."""
    if transport == "tcp":
        return where in _ipv4_ports("tcp", listening=True)
    if transport == "udp":
        return where in _ipv4_ports("udp", listening=False)
    if transport == "unix":
        return where in _unix_listening_paths()
    raise ValueError(f"unknown transport {transport!r}")
