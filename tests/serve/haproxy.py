"""The ``haproxy`` fixture: a real HAProxy process for PROXY protocol interop tests.

Use it from a test module in this directory with::

    from haproxy import HAProxyFactory, haproxy_fixture  # noqa: F401 - registers it

    def test_something(haproxy: HAProxyFactory) -> None:
        instance = haproxy(config_text)  # returns once its binds listen

(A helper module rather than ``tests/serve/conftest.py``: without ``__init__.py`` files
a second ``conftest`` module clashes with ``tests/conftest.py`` for mypy, "Duplicate
module named 'conftest'", and replaces it in ``sys.modules`` for the tests that
``import conftest``.)

``haproxy(config_text)`` writes the configuration to the test's ``tmp_path``, starts
``haproxy -db -f <file>`` (foreground: no daemon, no master process) in its own process
group, and returns once every ``bind 127.0.0.1:PORT`` of the configuration is listening.
At teardown every HAProxy the test started gets SIGTERM (HAProxy's "hard stop"), then
SIGKILL if it has not exited within :data:`STOP_SECONDS`, and is waited for, so the
leak check of tests/conftest.py sees no child and no zombie.

HAProxy comes from the Debian package ``haproxy`` that ``python3 dev.py test`` installs
when it can (root and apt-get). Without it the tests that use the fixture skip with the
reason, except in CI (environment variable ``CI`` set), where a missing HAProxy is a
failure: an interop suite that silently skips proves nothing.

Only 127.0.0.1 is used. Free ports come from binding port 0 and closing; another
process could take one in between, which would show up as HAProxy failing to bind (its
output is in the error).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

# Generous for a loaded 2-core CI machine: HAProxy itself starts in a few milliseconds.
START_SECONDS = 10.0
STOP_SECONDS = 5.0
# There is no event to wait on for "a process bound a port"; this bounds the polling.
POLL_SECONDS = 0.01

_BIND = re.compile(r"^\s*bind\s+127\.0\.0\.1:(\d+)\b", re.MULTILINE)
_TCP_LISTEN = "0A"  # TCP_LISTEN in include/net/tcp_states.h, as /proc/net/tcp prints it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening_ports() -> set[int]:
    """Local ports in LISTEN state on 127.0.0.1 or the IPv4 wildcard (/proc/net/tcp).

    Reading the kernel's table, unlike a probing connect, does not hand HAProxy a
    connection: a probe would reach the backend (or be refused by ``accept-proxy``) and
    disturb the test.
    """
    ports: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, port = local.partition(":")
            if state == _TCP_LISTEN and address in {"0100007F", "00000000"}:
                ports.add(int(port, 16))
    return ports


@dataclass
class HAProxyProcess:
    """One running HAProxy: its process, configuration file, and output log."""

    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    ports: list[int]

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        """Everything HAProxy wrote to stdout and stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_SECONDS`; always waits (idempotent)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_SECONDS)


@dataclass
class HAProxyFactory:
    """The ``haproxy`` fixture's value: call it with a configuration to start HAProxy."""

    executable: str
    directory: Path
    started: list[HAProxyProcess] = field(default_factory=list)

    @staticmethod
    def free_port() -> int:
        """A free port on 127.0.0.1 (see :func:`free_port`)."""
        return free_port()

    def __call__(self, config_text: str) -> HAProxyProcess:
        """Start HAProxy with ``config_text``; return when all its 127.0.0.1 binds listen.

        Fails the test (with HAProxy's output) if the configuration binds no
        ``127.0.0.1:PORT``, if HAProxy exits, or if it does not listen within
        :data:`START_SECONDS`.
        """
        ports = [int(port) for port in _BIND.findall(config_text)]
        if not ports:
            pytest.fail("haproxy fixture: the configuration has no 'bind 127.0.0.1:PORT' line")
        number = len(self.started)
        config_path = self.directory / f"haproxy-{number}.cfg"
        log_path = self.directory / f"haproxy-{number}.log"
        config_path.write_text(config_text, encoding="utf-8")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [self.executable, "-db", "-f", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C in the terminal reaches pytest only,
                # and teardown alone decides when HAProxy stops.
                process_group=0,
            )
        instance = HAProxyProcess(process, config_path, log_path, ports)
        self.started.append(instance)
        self._wait_until_listening(instance)
        return instance

    def _wait_until_listening(self, instance: HAProxyProcess) -> None:
        deadline = time.monotonic() + START_SECONDS
        for _ in range(int(START_SECONDS / POLL_SECONDS) + 1):
            if instance.process.poll() is not None:
                pytest.fail(
                    f"haproxy exited with status {instance.process.returncode} while "
                    f"starting:\n{instance.output()}"
                )
            if set(instance.ports) <= listening_ports():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        pytest.fail(
            f"haproxy did not listen on {instance.ports} within {START_SECONDS} s:\n"
            f"{instance.output()}"
        )


def find_haproxy() -> str:
    """The haproxy executable; skip the test if there is none (fail in CI)."""
    executable = shutil.which("haproxy")
    if executable is None:
        reason = (
            "haproxy is not installed (python3 dev.py test installs the Debian package "
            "'haproxy' when run as root with apt-get; or: apt-get install haproxy)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the interop tests must run", pytrace=False)
        pytest.skip(reason)
    return executable


# Registered as "haproxy"; the function has another name so that importing it into a
# test module does not clash with the test's `haproxy` parameter.
@pytest.fixture(name="haproxy")
def haproxy_fixture(tmp_path: Path) -> Iterator[HAProxyFactory]:
    """Start real HAProxy processes for this test; all are stopped and reaped after it."""
    factory = HAProxyFactory(find_haproxy(), tmp_path)
    try:
        yield factory
    finally:
        for instance in factory.started:
            instance.stop()
