"""The EOF matrix of ncat mode (issue 5, acceptance 1): every cell runs a real ``sockit``.

The matrix is sockit's role (client in connect mode, server in listen mode) x which EOF
comes first (sockit's stdin, or the socket peer's) x one flag (none, ``-k``,
``--send-only``, ``--recv-only``, ``--no-shutdown``, ``-q 500ms``) x transport (TCP, UNIX
stream, UDP). UDP has no EOF on the socket: there "socket first" is the peer going silent,
and ``-k`` (which only changes what a socket EOF does) and ``--no-shutdown`` (there is no
shutdown to skip) are left out. When the first EOF happens, data is still in flight the
other way: the peer's 1 MiB when stdin ends (sockit's stdout is not read until then), or
stdin's 1 MiB when the peer's FIN arrives (the peer does not read until then); UDP uses a
few datagrams, as a datagram may be dropped when a receive buffer overflows.

Every cell says, from the README's EOF table (ncat 7.96+ semantics), and the test checks:

* the bytes delivered each way: all of them, byte-exact; a prefix, where the rule ends
  the session while a direction is still sending; or none;
* whether the first EOF is passed on while sockit keeps running (a stdin EOF becomes the
  peer's EOF; a socket EOF closes sockit's stdout);
* how the process ends: by itself after the first EOF, after the second event (the other
  EOF), or only when killed (SIGTERM); and its exit status;
* with ``-l -k``: that a client leaving does not end the server, and that a second
  client is accepted, its bytes reach stdout and, stdin being at EOF, it is half-closed at
  once (the README's "half-close every client").

The peer is plain Python sockets. One selector drives the peer, sockit's stdin, stdout and
stderr, and a pidfd that becomes readable when sockit exits: no threads, and every wait is
bounded by :data:`TIMEOUT` (or :data:`HOLD` where the process must keep running). Must
never talk to anything but loopback and UNIX sockets, nor leave a process or an fd behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TIMEOUT = 10.0
"""Bound of every wait that should succeed: a failing cell fails within it."""
HOLD = 0.3
"""How long a process that must keep running is watched. sockit acts on an EOF within
milliseconds on loopback; 0.3 s is ample and keeps the 64 cells within the time budget."""
QUIT_ARG = "500ms"
QUIT = 0.5
"""``-q 500ms``: also exercises ncat's time suffixes."""
BIG = 1 << 20
"""The data in flight when the first EOF happens: more than a pipe (64 KiB) and a socket's
initial buffers hold, so it is really still moving."""
SMALL = 32 * 1024
"""The stdin data of a stdin-first cell: fits in a pipe, so it is written whole even when
sockit never reads stdin (``--recv-only``)."""
UDP_STDIN = 4000
DATAGRAM = 1000
DATAGRAMS = 8
SECOND_CLIENT = b"second client\n"
MAX_STEPS = 200_000
"""Selector rounds per wait, besides its time bound (a round moves up to 64 KiB)."""
CHUNK = 1 << 16

Role = Literal["connect", "listen"]
Transport = Literal["tcp", "unix", "udp"]
First = Literal["stdin", "socket"]
Ending = Literal["first", "second", "kill"]
Amount = Literal["all", "prefix", "none"]

FLAG_ARGS: dict[str, list[str]] = {
    "none": [],
    "-k": ["-k"],
    "--send-only": ["--send-only"],
    "--recv-only": ["--recv-only"],
    "--no-shutdown": ["--no-shutdown"],
    "-q": ["-q", QUIT_ARG],
}


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix and what the README's EOF rules expect of it.

    ``ends``: ``"first"`` the process ends by itself after the first EOF; ``"second"``
    it keeps running until the second event (the other EOF: the peer's FIN, or stdin's
    EOF; for UDP stdin's EOF after the peer went silent); ``"kill"`` it keeps running after
    both and ends only on SIGTERM. ``stdout``: how much of the peer's data reaches stdout;
    ``to_peer``: how much of stdin reaches the peer. ``passed_on``: while sockit keeps
    running, the first EOF was passed on (stdin EOF -> the peer sees EOF; socket EOF ->
    stdout is closed); for ``-q`` cells that end by themselves: the peer saw EOF well
    before the quit.
    """

    role: Role
    transport: Transport
    first: First
    flag: str
    ends: Ending
    status: int
    stdout: Amount
    to_peer: Amount
    passed_on: bool

    @property
    def id(self) -> str:
        flag = self.flag.lstrip("-")
        return f"{self.role}-{self.transport}-{self.first}-eof-first-{flag}"

    @property
    def quits_on_timer(self) -> bool:
        """``-q`` is what ends it: SECS after stdin EOF, with the peer still connected."""
        if self.flag != "-q":
            return False
        return (self.first == "stdin" and self.ends == "first") or (
            self.transport == "udp" and self.ends == "second"
        )


Row = tuple[Role, First, str, Ending, int, Amount, Amount, bool]

# TCP and UNIX stream sockets. Connect mode: stdin EOF -> shutdown(SHUT_WR), keep
# receiving; socket EOF ends the program (-k: keeps running until stdin EOF);
# --no-shutdown: stdin EOF leaves the socket open; -q: quit SECS after stdin EOF;
# --send-only: half-close and quit, received data dropped (never read, as in ncat, so the
# peer's EOF does not cut the upload short); --recv-only: stdin never read.
# Listen mode without -k: one client, exit once both directions ended. With -k: stdin EOF
# half-closes every client; a client's EOF closes that client; it runs until killed
# (SIGTERM: a clean stop, status 0).
STREAM_ROWS: list[Row] = [
    # role      first     flag             ends      status stdout    to_peer   passed_on
    ("connect", "stdin", "none", "second", 0, "all", "all", True),
    ("connect", "stdin", "-k", "second", 0, "all", "all", True),
    ("connect", "stdin", "--send-only", "first", 0, "none", "all", False),
    ("connect", "stdin", "--recv-only", "second", 0, "all", "none", False),
    ("connect", "stdin", "--no-shutdown", "second", 0, "all", "all", False),
    ("connect", "stdin", "-q", "first", 0, "all", "all", True),
    ("connect", "socket", "none", "first", 0, "all", "prefix", False),
    ("connect", "socket", "-k", "second", 0, "all", "all", True),
    ("connect", "socket", "--send-only", "second", 0, "none", "all", True),
    ("connect", "socket", "--recv-only", "first", 0, "all", "none", False),
    ("connect", "socket", "--no-shutdown", "first", 0, "all", "prefix", False),
    ("connect", "socket", "-q", "first", 0, "all", "prefix", False),
    ("listen", "stdin", "none", "second", 0, "all", "all", True),
    ("listen", "stdin", "-k", "kill", 0, "all", "all", True),
    ("listen", "stdin", "--send-only", "first", 0, "none", "all", False),
    ("listen", "stdin", "--recv-only", "second", 0, "all", "none", False),
    ("listen", "stdin", "--no-shutdown", "second", 0, "all", "all", False),
    ("listen", "stdin", "-q", "first", 0, "all", "all", True),
    ("listen", "socket", "none", "second", 0, "all", "all", True),
    ("listen", "socket", "-k", "kill", 0, "all", "prefix", False),
    ("listen", "socket", "--send-only", "second", 0, "none", "all", True),
    ("listen", "socket", "--recv-only", "first", 0, "all", "none", False),
    ("listen", "socket", "--no-shutdown", "second", 0, "all", "all", True),
    ("listen", "socket", "-q", "second", 0, "all", "all", True),
]

# UDP: stdin EOF ends nothing unless -q (quit SECS later) or --send-only (nothing more to
# do); the peer going silent ends nothing. What ends nothing by itself runs until killed:
# SIGTERM interrupts the pump, status 130 (ncat.py's _EXIT_INTERRUPTED).
UDP_ROWS: list[Row] = [
    ("connect", "stdin", "none", "kill", 130, "all", "all", False),
    ("connect", "stdin", "--send-only", "first", 0, "none", "all", False),
    ("connect", "stdin", "--recv-only", "kill", 130, "all", "none", False),
    ("connect", "stdin", "-q", "first", 0, "all", "all", False),
    ("connect", "socket", "none", "kill", 130, "all", "all", False),
    ("connect", "socket", "--send-only", "second", 0, "none", "all", False),
    ("connect", "socket", "--recv-only", "kill", 130, "all", "none", False),
    ("connect", "socket", "-q", "second", 0, "all", "all", False),
    ("listen", "stdin", "none", "kill", 130, "all", "all", False),
    ("listen", "stdin", "--send-only", "first", 0, "none", "all", False),
    ("listen", "stdin", "--recv-only", "kill", 130, "all", "none", False),
    ("listen", "stdin", "-q", "first", 0, "all", "all", False),
    ("listen", "socket", "none", "kill", 130, "all", "all", False),
    ("listen", "socket", "--send-only", "second", 0, "none", "all", False),
    ("listen", "socket", "--recv-only", "kill", 130, "all", "none", False),
    ("listen", "socket", "-q", "second", 0, "all", "all", False),
]

TRANSPORTS: list[tuple[Transport, list[Row]]] = [
    ("tcp", STREAM_ROWS),
    ("unix", STREAM_ROWS),
    ("udp", UDP_ROWS),
]
CELLS = [
    Cell(role, transport, first, flag, ends, status, stdout, to_peer, passed_on)
    for transport, rows in TRANSPORTS
    for role, first, flag, ends, status, stdout, to_peer, passed_on in rows
]


@functools.cache
def payload(tag: bytes, size: int) -> bytes:
    """``size`` bytes of numbered lines (``S0000001\\n``...): a lost, repeated or reordered
    chunk cannot go unnoticed."""
    return b"".join(b"%s%07d\n" % (tag, index) for index in range(size // 9 + 1))[:size]


class Session:
    """One ``sockit -vv ...`` process and its peer, driven by one selector.

    Nothing moves between calls: bytes flow only inside :meth:`run_until`, which runs the
    selector until a condition holds or its time bound passes. ``close()`` kills and
    reaps the process if it still runs and closes the pipes, the pidfd and the selector
    (the peer's sockets belong to the caller).
    """

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sockit", "-vv", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.selector = selectors.DefaultSelector()
        self.pidfd = os.pidfd_open(self.process.pid)
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stdin_fd = self.process.stdin.fileno()
        self.stdout_fd = self.process.stdout.fileno()
        self.stderr_fd = self.process.stderr.fileno()
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd):
            os.set_blocking(fd, False)
        self.registered: dict[int, int] = {}
        self.exited_at: float | None = None
        self.stdin_queue = bytearray()
        self.stdin_close_wanted = False
        self.stdin_closed_at: float | None = None
        self.stdin_error: OSError | None = None
        self.stdout = bytearray()
        self.stdout_eof = False
        self.read_stdout = True
        self.stderr = bytearray()
        self.stderr_eof = False
        self.peer: socket.socket | None = None
        self.datagram = False
        self.read_peer = True
        self.peer_readable = False
        self.peer_received = bytearray()
        self.peer_eof_at: float | None = None
        self.peer_error: OSError | None = None
        self.peer_queue: list[bytes] = []
        self.peer_sent = bytearray()
        self.peer_shutdown_wanted = False
        self.peer_fin_sent = False
        self.peer_send_error: OSError | None = None

    # --- what the test does -------------------------------------------------------------

    def attach(self, peer: socket.socket) -> None:
        """Drive ``peer`` (the test's end of the connection) from now on."""
        peer.setblocking(False)
        self.peer = peer
        self.datagram = peer.type == socket.SOCK_DGRAM

    def feed_stdin(self, data: bytes, *, close: bool = False) -> None:
        """Queue ``data`` for sockit's stdin; ``close``: EOF once it is written."""
        self.stdin_queue += data
        self.stdin_close_wanted = self.stdin_close_wanted or close

    def close_stdin(self) -> None:
        self.stdin_close_wanted = True

    def peer_send(self, data: bytes, *, shutdown: bool = False) -> None:
        """Queue ``data`` on the stream peer; ``shutdown``: FIN once it is sent."""
        self.peer_queue += [data[start : start + CHUNK] for start in range(0, len(data), CHUNK)]
        self.peer_sent += data
        self.peer_shutdown_wanted = self.peer_shutdown_wanted or shutdown

    def peer_send_datagrams(self, datagrams: list[bytes]) -> None:
        self.peer_queue += datagrams
        self.peer_sent += b"".join(datagrams)

    @property
    def exited(self) -> bool:
        return self.exited_at is not None

    @property
    def stdin_closed(self) -> bool:
        return self.stdin_closed_at is not None

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Move bytes until ``done()`` or ``timeout`` seconds pass; ``done()``'s value."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_STEPS):
            self._refresh()
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, events in self.selector.select(remaining):
                self._dispatch(key.data, events)
        return done()

    def keeps_running(self) -> bool:
        """Still running after :data:`HOLD` seconds (bytes keep moving meanwhile)."""
        return not self.run_until(lambda: self.exited, HOLD)

    def await_line(self, pattern: str) -> re.Match[bytes]:
        """The first match of ``pattern`` on sockit's stderr (fails the test without)."""
        regex = re.compile(pattern.encode())

        def seen() -> bool:
            return regex.search(self.stderr) is not None or (self.exited and self.stderr_eof)

        self.run_until(seen, TIMEOUT)
        match = regex.search(self.stderr)
        if match is None:
            pytest.fail(f"sockit never printed {pattern!r}: {self.describe()}")
        return match

    def terminate(self) -> None:
        self.process.terminate()
        assert self.run_until(lambda: self.exited, TIMEOUT), "SIGTERM did not end sockit"

    def finish(self) -> None:
        """After the exit: collect what is still in the pipes and the peer's socket."""
        self.read_stdout = self.read_peer = True

        def drained() -> bool:
            peer_done = self.datagram or self.peer_eof_at is not None or self.peer_error
            return self.stdout_eof and self.stderr_eof and bool(peer_done)

        assert self.run_until(drained, TIMEOUT), f"output never ended: {self.describe()}"
        if self.datagram and self.peer is not None and self.peer_error is None:
            for _ in range(MAX_STEPS):  # what sockit sent before it exited is queued here
                try:
                    self.peer_received += self.peer.recv(CHUNK)
                except OSError:  # BlockingIOError: all read; or an ICMP error after exit
                    break

    def describe(self) -> str:
        """The state of everything, for failure messages."""
        stderr = self.stderr.decode(errors="replace").strip()[-2000:]
        return (
            f"status {self.process.returncode}, stdout {len(self.stdout)} bytes"
            f"{' (closed)' if self.stdout_eof else ''}, peer got {len(self.peer_received)}"
            f" bytes{' + EOF' if self.peer_eof_at else ''}, peer error {self.peer_error!r},"
            f" peer send error {self.peer_send_error!r}, stdin error {self.stdin_error!r},"
            f" stderr: {stderr!r}"
        )

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.selector.close()
        os.close(self.pidfd)

    # --- the selector -------------------------------------------------------------------

    def _refresh(self) -> None:
        """Close what is due, then register exactly the events wanted now."""
        if self.stdin_close_wanted and not self.stdin_queue and not self.stdin_closed:
            self._forget(self.stdin_fd)
            assert self.process.stdin is not None
            with contextlib.suppress(OSError):
                self.process.stdin.close()
            self.stdin_closed_at = time.monotonic()
        if (
            self.peer is not None
            and self.peer_shutdown_wanted
            and not self.peer_queue
            and not self.peer_fin_sent
            and self.peer_send_error is None
        ):
            try:
                self.peer.shutdown(socket.SHUT_WR)
            except OSError as error:
                self.peer_send_error = error
            self.peer_fin_sent = True
        wanted: dict[int, tuple[int, str]] = {}
        if self.stdin_queue and not self.stdin_closed:
            wanted[self.stdin_fd] = (selectors.EVENT_WRITE, "stdin")
        if self.read_stdout and not self.stdout_eof:
            wanted[self.stdout_fd] = (selectors.EVENT_READ, "stdout")
        if not self.stderr_eof:
            wanted[self.stderr_fd] = (selectors.EVENT_READ, "stderr")
        if not self.exited:
            wanted[self.pidfd] = (selectors.EVENT_READ, "exit")
        if self.peer is not None:
            events = 0
            open_for_reading = self.peer_eof_at is None and self.peer_error is None
            if open_for_reading and (self.read_peer or not self.peer_readable):
                events |= selectors.EVENT_READ
            if self.peer_queue and self.peer_send_error is None:
                events |= selectors.EVENT_WRITE
            if events:
                wanted[self.peer.fileno()] = (events, "peer")
        for fd in [fd for fd in self.registered if fd not in wanted]:
            self._forget(fd)
        for fd, (events, name) in wanted.items():
            if fd not in self.registered:
                self.selector.register(fd, events, name)
            elif self.registered[fd] != events:
                self.selector.modify(fd, events, name)
            self.registered[fd] = events

    def _forget(self, fd: int) -> None:
        if self.registered.pop(fd, None) is not None:
            self.selector.unregister(fd)

    def _dispatch(self, name: str, events: int) -> None:
        if name == "stdin":
            self._write_stdin()
        elif name == "stdout":
            data = self._read(self.stdout_fd)
            if data is not None:
                self.stdout += data
                self.stdout_eof = not data
        elif name == "stderr":
            data = self._read(self.stderr_fd)
            if data is not None:
                self.stderr += data
                self.stderr_eof = not data
        elif name == "exit":
            self.exited_at = time.monotonic()
            self.process.wait(TIMEOUT)  # the pidfd said it exited: reaped at once
        else:
            if events & selectors.EVENT_READ:
                self._read_peer()
            if events & selectors.EVENT_WRITE:
                self._write_peer()

    @staticmethod
    def _read(fd: int) -> bytes | None:
        """What the pipe holds (``b""``: EOF), or ``None`` when it has nothing yet."""
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            return None

    def _write_stdin(self) -> None:
        try:
            written = os.write(self.stdin_fd, self.stdin_queue[:CHUNK])
        except BlockingIOError:
            return
        except OSError as error:  # EPIPE: sockit exited (or never reads stdin again)
            self.stdin_error = error
            self.stdin_queue.clear()
            return
        del self.stdin_queue[:written]

    def _read_peer(self) -> None:
        assert self.peer is not None
        if not self.read_peer:
            self.peer_readable = True  # noted; read once the test allows it
            return
        try:
            data = self.peer.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as error:  # a reset, or an ICMP error on the UDP peer
            self.peer_error = error
            return
        if not data and not self.datagram:
            self.peer_eof_at = time.monotonic()
        self.peer_received += data

    def _write_peer(self) -> None:
        assert self.peer is not None
        while self.peer_queue:
            chunk = self.peer_queue[0]
            try:
                sent = self.peer.send(chunk)
            except BlockingIOError:
                return
            except OSError as error:  # sockit closed or reset the connection
                self.peer_send_error = error
                self.peer_queue.clear()
                return
            if self.datagram or sent == len(chunk):
                self.peer_queue.pop(0)
            else:
                self.peer_queue[0] = chunk[sent:]


# --- setting up a cell -------------------------------------------------------------------


@dataclass
class Setup:
    """A started cell: the session, and where a second client connects (listen mode)."""

    session: Session
    family: int
    address: str | tuple[str, int]
    datagrams: list[bytes]
    """The peer's data for UDP (in listen mode the first one made the connection)."""


def start(cell: Cell, tmp_path: Path, stack: contextlib.ExitStack) -> Setup:
    """Start ``sockit`` for ``cell`` and connect it with the test's peer."""
    flags = FLAG_ARGS[cell.flag]
    udp = cell.transport == "udp"
    family = socket.AF_UNIX if cell.transport == "unix" else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    datagrams = [payload(b"%d" % index, DATAGRAM) for index in range(DATAGRAMS)]
    if cell.role == "connect":
        server = stack.enter_context(socket.socket(family, kind))
        if cell.transport == "unix":
            path = str(tmp_path / "peer.sock")
            server.bind(path)
            target = ["-U", path]
        else:
            server.bind(("127.0.0.1", 0))
            target = [*(["-u"] if udp else []), "127.0.0.1", str(server.getsockname()[1])]
        if not udp:
            server.listen()
        session = Session([*flags, *target])
        stack.callback(session.close)
        if udp:
            # -vv: "Connection LOCAL -> REMOTE." (the peer needs sockit's address even
            # when sockit never sends, with --recv-only).
            match = session.await_line(r"Connection (\S+):(\d+) -> ")
            server.connect((match[1].decode(), int(match[2])))
            session.attach(server)
        else:
            session.await_line("Connected to ")
            server.settimeout(TIMEOUT)
            peer, _ = server.accept()  # already in the backlog
            session.attach(stack.enter_context(peer))
        return Setup(session, family, "", datagrams)
    if cell.transport == "unix":
        address: str | tuple[str, int] = str(tmp_path / "sockit.sock")
        session = Session([*flags, "-U", "-l", str(address)])
        stack.callback(session.close)
        session.await_line("Listening on ")
    else:
        session = Session([*flags, *(["-u"] if udp else []), "-l", "127.0.0.1", "0"])
        stack.callback(session.close)
        match = session.await_line(r"Listening on 127\.0\.0\.1:(\d+)")
        address = ("127.0.0.1", int(match[1]))
    client = stack.enter_context(socket.socket(family, kind))
    client.settimeout(TIMEOUT)
    client.connect(address)
    session.attach(client)
    if udp:
        # ncat's UDP listen mode: the first datagram's sender becomes the peer.
        session.peer_send_datagrams(datagrams[:1])
        datagrams = datagrams[1:]
    session.await_line("Connection from")
    return Setup(session, family, address, datagrams)


def second_client(setup: Setup, stdin_data: bytes) -> None:
    """``-l -k`` after the first client left and stdin was closed: a new client is
    accepted, its bytes reach stdout, and it gets what is left of stdin (the hub reads
    stdin only while a client is connected, as ncat does), then EOF."""
    session = setup.session
    with socket.socket(setup.family, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(setup.address)
        client.sendall(SECOND_CLIENT)
        arrived = session.run_until(lambda: session.stdout.endswith(SECOND_CLIENT), TIMEOUT)
        assert arrived, f"a second client's bytes never reached stdout: {session.describe()}"
        client.setblocking(False)
        rest = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                session.run_until(lambda: False, 0.01)  # keep sockit's stdin flowing
                continue
            if not chunk:
                break
            rest += chunk
        else:
            pytest.fail("a client that connects after stdin EOF is not half-closed")
        assert stdin_data.endswith(rest), "the second client got bytes that are not stdin's"
        assert session.stdin_closed, session.describe()


# --- the two phases ------------------------------------------------------------------------


def run_stream(cell: Cell, setup: Setup, stdin_data: bytes, peer_data: bytes) -> None:
    """TCP or UNIX: the first EOF with the other direction's 1 MiB in flight, then the
    second event, each followed by the checks of what must have happened by then."""
    session = setup.session
    if cell.first == "stdin":
        session.read_stdout = False  # the peer's 1 MiB stays in flight while stdin ends
        session.peer_send(peer_data)
        session.feed_stdin(stdin_data, close=True)
        assert session.run_until(lambda: session.stdin_closed, TIMEOUT), "stdin not written"
        session.read_stdout = True
    else:
        session.read_peer = False  # stdin's 1 MiB backs up in flight while the peer ends
        session.feed_stdin(stdin_data)
        if cell.to_peer != "none":
            flowing = session.run_until(lambda: session.peer_readable, TIMEOUT)
            assert flowing, f"stdin never reached the peer: {session.describe()}"
        session.peer_send(peer_data, shutdown=True)
        assert session.run_until(lambda: session.peer_fin_sent, TIMEOUT), session.describe()
        session.read_peer = True
    if cell.ends == "first":
        ended = session.run_until(lambda: session.exited, TIMEOUT)
        assert ended, f"still running after the {cell.first} EOF: {session.describe()}"
        return

    def first_done() -> bool:
        if cell.stdout == "all" and len(session.stdout) < len(peer_data):
            return False
        if cell.first == "socket":
            return session.stdout_eof or not cell.passed_on
        if cell.to_peer == "all" and len(session.peer_received) < len(stdin_data):
            return False
        return session.peer_eof_at is not None or not cell.passed_on

    assert session.run_until(first_done, TIMEOUT), f"after the first EOF: {session.describe()}"
    assert session.keeps_running(), f"ended after the first EOF: {session.describe()}"
    if cell.first == "stdin":
        assert (session.peer_eof_at is not None) == cell.passed_on, (
            f"stdin EOF {'not ' if cell.passed_on else ''}passed on: {session.describe()}"
        )
        session.peer_send(b"", shutdown=True)  # the second event: the peer's FIN
        assert session.run_until(lambda: session.peer_fin_sent, TIMEOUT), session.describe()
    else:
        assert session.stdout_eof == cell.passed_on, (
            f"stdout {'not ' if cell.passed_on else ''}closed at socket EOF: {session.describe()}"
        )
        session.close_stdin()  # the second event, once stdin's 1 MiB is written
        if cell.ends != "kill":  # -l -k: stdin waits for the next client (second_client)
            assert session.run_until(lambda: session.stdin_closed, TIMEOUT), session.describe()
    if cell.ends == "second":
        ended = session.run_until(lambda: session.exited, TIMEOUT)
        assert ended, f"still running after both EOFs: {session.describe()}"
        return
    assert session.keeps_running(), f"-k: ended when the client left: {session.describe()}"
    second_client(setup, stdin_data)
    session.terminate()


def run_udp(cell: Cell, setup: Setup, stdin_data: bytes) -> None:
    """UDP: stdin EOF, or the peer's data followed by silence (UDP's only "EOF")."""
    session = setup.session
    session.feed_stdin(stdin_data, close=cell.first == "stdin")
    if cell.first == "stdin":
        assert session.run_until(lambda: session.stdin_closed, TIMEOUT), "stdin not written"
    if cell.to_peer != "none":
        arrived = session.run_until(lambda: len(session.peer_received) >= len(stdin_data), 5)
        assert arrived, f"stdin never reached the peer: {session.describe()}"
    session.peer_send_datagrams(setup.datagrams)  # after stdin EOF in a stdin-first cell
    if cell.ends == "first":
        ended = session.run_until(lambda: session.exited, TIMEOUT)
        assert ended, f"still running after stdin EOF: {session.describe()}"
        return
    if cell.stdout == "all":
        arrived = session.run_until(lambda: len(session.stdout) >= len(session.peer_sent), 5)
        assert arrived, f"the peer's datagrams never reached stdout: {session.describe()}"
    assert session.keeps_running(), f"ended after the first event: {session.describe()}"
    if cell.first == "socket":
        session.close_stdin()  # the second event: stdin EOF after the peer went silent
        assert session.run_until(lambda: session.stdin_closed, TIMEOUT), session.describe()
        if cell.ends == "second":
            ended = session.run_until(lambda: session.exited, TIMEOUT)
            assert ended, f"still running after stdin EOF: {session.describe()}"
            return
        assert session.keeps_running(), f"ended after stdin EOF: {session.describe()}"
    session.terminate()


def check_amount(name: str, got: bytes, sent: bytes, amount: Amount) -> None:
    if amount == "all":
        assert got == sent, f"{name}: {len(got)} of {len(sent)} bytes, or different bytes"
    elif amount == "none":
        assert got == b"", f"{name}: {len(got)} bytes, expected none"
    else:
        assert sent.startswith(got), f"{name}: {len(got)} bytes, not a prefix of what was sent"


@pytest.mark.parametrize("cell", CELLS, ids=[cell.id for cell in CELLS])
def test_eof_matrix(cell: Cell, tmp_path: Path) -> None:
    udp = cell.transport == "udp"
    if udp:
        stdin_data = payload(b"S", UDP_STDIN)
    else:
        stdin_data = payload(b"S", SMALL if cell.first == "stdin" else BIG)
    peer_data = payload(b"P", BIG)
    with contextlib.ExitStack() as stack:
        setup = start(cell, tmp_path, stack)
        session = setup.session
        if udp:
            run_udp(cell, setup, stdin_data)
        else:
            run_stream(cell, setup, stdin_data, peer_data)
        session.finish()
        assert session.process.returncode == cell.status, session.describe()
        expected_stdout = bytes(session.peer_sent)
        if cell.flag == "-k" and cell.role == "listen":
            expected_stdout += SECOND_CLIENT
        check_amount("stdout", bytes(session.stdout), expected_stdout, cell.stdout)
        check_amount("peer", bytes(session.peer_received), stdin_data, cell.to_peer)
        if not udp and not (cell.flag == "--send-only" and cell.first == "stdin"):
            # A clean end: the peer reads up to sockit's EOF, never a reset. Except where
            # sockit quits while the peer is still sending: closing a socket with unread
            # data resets it (ncat's too), and on a UNIX socket that ECONNRESET may be
            # read instead of the EOF sent just before it (TCP delivers the FIN first).
            assert session.peer_error is None, session.describe()
        if cell.quits_on_timer:
            assert session.exited_at is not None
            assert session.stdin_closed_at is not None
            waited = session.exited_at - session.stdin_closed_at
            assert waited >= QUIT, f"-q {QUIT_ARG}: quit {waited:.3f} s after stdin EOF"
        if cell.quits_on_timer and cell.passed_on:
            # The half-close came at stdin EOF, well before the quit.
            assert session.peer_eof_at is not None, session.describe()
            assert session.exited_at is not None
            assert session.peer_eof_at < session.exited_at - QUIT / 2, session.describe()
