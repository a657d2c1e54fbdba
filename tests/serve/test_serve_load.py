"""Load acceptance: 200 concurrent 1 MiB echoes per mode, and a burst of 600 connects."""

from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve import serve

if TYPE_CHECKING:
    from sockit import SocketStream

MIB = 1 << 20


def echo(stream: SocketStream) -> None:
    while data := stream.recv(262144):
        stream.sendall(data)


@dataclass
class EchoClient:
    """One non-blocking client: sends its payload, half-closes, checks every byte back."""

    sock: socket.socket
    payload: memoryview
    sent: int = 0
    received: int = 0
    connected: bool = False
    done: bool = False
    errors: list[str] = field(default_factory=list)


def echo_concurrently(port: int, clients: int, size: int, timeout: float) -> list[str]:
    """Run ``clients`` echo exchanges of ``size`` bytes at once from one thread with a
    selector; return the problems found (empty: every byte came back, in order)."""
    # Each client sends a different window of one random block, so a mixed-up stream
    # (another client's bytes, or bytes out of order) cannot compare equal.
    block = os.urandom(size + clients)
    selector = selectors.DefaultSelector()
    states: list[EchoClient] = []
    try:
        for number in range(clients):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", port))
            assert code in (0, errno.EINPROGRESS), os.strerror(code)
            state = EchoClient(sock, memoryview(block)[number : number + size])
            states.append(state)
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, state)
        deadline = time.monotonic() + timeout
        remaining = clients
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                return [f"timed out with {remaining} client(s) unfinished"]
            for key, events in selector.select(left):
                state = key.data
                if events & selectors.EVENT_WRITE:
                    step(state, selector, writable=True)
                if events & selectors.EVENT_READ and not state.done:
                    step(state, selector, writable=False)
                if state.done:
                    remaining -= 1
                    selector.unregister(state.sock)
                    state.sock.close()
    finally:
        for state in states:
            state.sock.close()
        selector.close()
    return [error for state in states for error in state.errors]


def step(state: EchoClient, selector: selectors.BaseSelector, *, writable: bool) -> None:
    sock = state.sock
    size = len(state.payload)
    if writable:
        if not state.connected:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                state.errors.append(f"connect failed: {os.strerror(code)}")
                state.done = True
                return
            state.connected = True
        try:
            state.sent += sock.send(state.payload[state.sent : state.sent + 262144])
        except BlockingIOError:
            return
        if state.sent == size:
            sock.shutdown(socket.SHUT_WR)
            selector.modify(sock, selectors.EVENT_READ, state)
        return
    try:
        data = sock.recv(262144)
    except BlockingIOError:
        return
    except OSError as error:
        state.errors.append(f"recv failed after {state.received} bytes: {error}")
        state.done = True
        return
    if not data:
        if state.received != size:
            state.errors.append(f"EOF after {state.received} of {size} bytes")
        state.done = True
        return
    if state.payload[state.received : state.received + len(data)] != data:
        state.errors.append(f"wrong bytes at offset {state.received}")
        state.done = True
        return
    state.received += len(data)


@pytest.mark.parametrize(
    ("mode", "workers"),
    [("thread", 1), ("fork", 1), ("thread", 2)],
    ids=["thread", "fork", "workers=2"],
)
def test_200_concurrent_clients_each_echo_1_mib(mode: str, workers: int) -> None:
    with serve(echo, 0, "127.0.0.1", mode=mode, workers=workers) as server:  # type: ignore[call-overload]
        problems = echo_concurrently(server.port, clients=200, size=MIB, timeout=30)
        assert problems == []
        deadline = time.monotonic() + 5
        while server.stats.accepted < 200 and time.monotonic() < deadline:
            time.sleep(0.01)  # a worker may count its last connection a moment later
    stats = server.stats
    assert stats.accepted == 200
    assert (stats.refused, stats.errors) == (0, 0)


def test_a_burst_of_600_connects_from_many_threads_all_succeed() -> None:
    threads = 30
    per_thread = 20
    start = threading.Barrier(threads)
    failures: list[str] = []
    lock = threading.Lock()

    def burst() -> None:
        opened: list[SocketStream] = []
        try:
            start.wait(10)
            # Connect all first (the burst), then talk on each: the backlog must hold them.
            opened.extend(
                sockit.connect("127.0.0.1", server.port, timeout=10) for _ in range(per_thread)
            )
            for client in opened:
                client.sendall(b"!")
                if client.recv_exactly(1, timeout=10) != b"!":
                    raise AssertionError("wrong echo")
        except Exception as error:
            with lock:
                failures.append(repr(error))
        finally:
            for client in opened:
                client.close()

    with serve(echo, 0, "127.0.0.1") as server:
        workers = [threading.Thread(target=burst) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert failures == []
    assert server.stats.accepted == threads * per_thread
