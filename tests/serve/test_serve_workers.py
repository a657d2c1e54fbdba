"""workers=N: N supervised processes on one port; restarts, stats, shutdown."""

from __future__ import annotations

import os
import signal
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


def answer_pid(stream: SocketStream) -> None:
    stream.recv_line(timeout=5)
    stream.sendall(b"%d\n" % os.getpid())


def ask_pid(port: int) -> int:
    with sockit.connect("127.0.0.1", port, timeout=5) as client:
        client.sendall(b"who\n")
        return int(client.recv_line(timeout=5))


def wait_for(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("mode", ["thread", "sequential", "fork"])
def test_workers_share_the_port_and_report_stats_from_every_process(mode: str) -> None:
    with serve(answer_pid, 0, "127.0.0.1", workers=2, mode=mode) as server:  # type: ignore[call-overload]
        assert server.workers == 2
        assert wait_for(lambda: len(server.worker_pids) == 2, 5)
        workers = set(server.worker_pids)
        answers = {ask_pid(server.port) for _ in range(20)}
        if mode != "fork":
            assert answers <= workers
            assert os.getpid() not in answers
        assert wait_for(lambda: server.stats.accepted == 20, 5)
    assert server.stats.accepted == 20
    assert server.worker_pids == []


def test_a_killed_worker_is_replaced_and_the_port_keeps_answering(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with serve(answer_pid, 0, "127.0.0.1", workers=2) as server:
        assert wait_for(lambda: len(server.worker_pids) == 2, 5)
        victim = server.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(
            lambda: victim not in server.worker_pids and len(server.worker_pids) == 2, 5
        )
        survivors = set(server.worker_pids)
        for _ in range(10):
            assert ask_pid(server.port) in survivors
        assert server.stats.restarts == 1
    restarts = [r for r in caplog.records if "restarting" in r.getMessage()]
    assert len(restarts) == 1
    assert "killed by SIGKILL" in restarts[0].getMessage()


def test_a_crash_looping_worker_is_restarted_with_growing_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def crash(stream: SocketStream) -> None:
        stream.sendall(b"bye")
        os._exit(7)  # the whole worker process dies, as with a segfault

    with serve(crash, 0, "127.0.0.1", workers=2) as server:
        assert wait_for(lambda: len(server.worker_pids) == 2, 5)
        for _ in range(3):
            with sockit.connect("127.0.0.1", server.port, timeout=5) as client:
                assert client.recv_exactly(3, timeout=5) == b"bye"
                # EOF when the worker is dead: only then connect again, or the dying
                # worker could accept the next connection and take it down with it.
                assert client.recv(1, timeout=5) == b""
        assert wait_for(lambda: server.stats.restarts >= 3, 10)
        assert wait_for(lambda: len(server.worker_pids) == 2, 15)
    messages = [r.getMessage() for r in caplog.records if "restarting" in r.getMessage()]
    assert messages
    assert all("exited with status 7" in message for message in messages)
    assert any(" in 0." in message or " in 1." in message for message in messages)


def test_shutdown_stops_every_worker_and_removes_the_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "workers.sock")
    with serve(answer_pid, listener=sockit.listen_unix(path), workers=3) as server:
        assert wait_for(lambda: len(server.worker_pids) == 3, 5)
        pids = server.worker_pids
        with sockit.connect_unix(path, timeout=5) as client:
            client.sendall(b"who\n")
            assert int(client.recv_line(timeout=5)) in pids
    assert server.worker_pids == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _parent_of(pid) != os.getpid()
    assert not Path(path).exists()


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


WORKERS_SERVER = textwrap.dedent(
    """
    import logging, os, sys
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    from sockit.serve import serve

    def answer_pid(stream):
        stream.recv_line(timeout=5)
        stream.sendall(b"%d\\n" % os.getpid())

    server = serve(answer_pid, 0, "127.0.0.1", workers=2, drain_timeout=5)
    print(server.port, flush=True)
    server.serve_forever()
    print("returned", flush=True)
    """
)


def test_sigterm_to_the_parent_reaches_every_worker_and_leaves_no_zombie() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", WORKERS_SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        workers: set[int] = set()
        deadline = time.monotonic() + 10
        while len(workers) < 2 and time.monotonic() < deadline:
            workers.add(ask_pid(port))
        assert len(workers) == 2
        assert {_parent_of(pid) for pid in workers} == {parent.pid}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=15) == 0
        assert parent.stdout.readline() == b"returned\n"
        for pid in workers:
            # Gone, not a zombie and not an orphan adopted by init.
            assert not Path(f"/proc/{pid}").exists()
        with pytest.raises(ConnectionRefusedError):
            sockit.connect("127.0.0.1", port, timeout=5)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdout is not None
        assert parent.stderr is not None
        parent.stdout.close()
        parent.stderr.close()
