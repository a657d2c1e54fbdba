"""Echo backend for the relay acceptance tests: holds any number of connections at once.

Run as ``python _acceptance_echo.py [LIFETIME_SECONDS]``. It listens on 127.0.0.1 port 0
and prints ``port N`` on stdout; it echoes every byte it receives, closes a connection
(a clean FIN) when the peer sends EOF, and drops one on an error. On SIGTERM, or when
LIFETIME_SECONDS (default 300) have passed, it prints ``max_open M accepted A`` (the
most connections it held at once, and how many it accepted) and exits 0.

One thread and epoll, so ten thousand idle connections cost no threads; the caller
raises RLIMIT_NOFILE for it (it never raises its own limit).

Must never connect anywhere, listen on anything but loopback, or run forever.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

DEFAULT_LIFETIME = 300.0
BACKLOG = 4096  # net.core.somaxconn's default since Linux 5.4; the kernel caps it anyway


class EchoServer:
    """The accept loop and one output buffer per connection."""

    def __init__(self) -> None:
        self.selector = selectors.EpollSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(BACKLOG)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.outgoing: dict[socket.socket, bytearray] = {}
        self.accepted = 0
        self.max_open = 0
        # The signal handler only writes a byte here; the loop wakes on it at once.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, lambda _signum, _frame: None)

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def serve(self, lifetime: float) -> None:
        """Serve until SIGTERM or ``lifetime`` seconds."""
        deadline = time.monotonic() + lifetime
        while (remaining := deadline - time.monotonic()) > 0:
            for key, events in self.selector.select(remaining):
                if key.fileobj == self.wake_r:
                    return
                if key.fileobj is self.listener:
                    self.accept_all()
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if events & selectors.EVENT_WRITE:
                    self.flush(sock)
                if events & selectors.EVENT_READ and sock in self.outgoing:
                    self.receive(sock)

    def accept_all(self) -> None:
        for _ in range(BACKLOG):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                print(f"accept: {error}", file=sys.stderr, flush=True)
                return
            conn.setblocking(False)
            self.outgoing[conn] = bytearray()
            self.selector.register(conn, selectors.EVENT_READ, None)
            self.accepted += 1
            self.max_open = max(self.max_open, len(self.outgoing))

    def receive(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(sock)
            return
        if not data:
            self.drop(sock)  # EOF: everything was echoed or is dropped with the peer
            return
        self.outgoing[sock] += data
        self.flush(sock)

    def flush(self, sock: socket.socket) -> None:
        buffer = self.outgoing[sock]
        try:
            sent = sock.send(buffer) if buffer else 0
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.drop(sock)
            return
        del buffer[:sent]
        # Read no more while output is pending: the peer's sending is bounded by ours.
        wanted = selectors.EVENT_WRITE if buffer else selectors.EVENT_READ
        if self.selector.get_key(sock).events != wanted:
            self.selector.modify(sock, wanted, None)

    def drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        del self.outgoing[sock]
        sock.close()

    def close(self) -> None:
        for sock in list(self.outgoing):
            self.drop(sock)
        self.selector.close()
        self.listener.close()
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)


def main(argv: list[str]) -> int:
    lifetime = float(argv[1]) if len(argv) > 1 else DEFAULT_LIFETIME
    server = EchoServer()
    try:
        print(f"port {server.port}", flush=True)
        server.serve(lifetime)
        print(f"max_open {server.max_open} accepted {server.accepted}", flush=True)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
