"""Acceptance tests of the relay's stream pump (issue 4), over real loopback sockets.

Each point is proved end to end: a client and a backend owned by the test, the relay
between them either as the real CLI (``python -m sockit relay SRC DST``, a subprocess,
found through its ``Listening on`` line) or as the library's :class:`Relay` on the test's
own event loop (asyncio and uvloop), on both copy paths (``splice(2)`` and the buffer).

1. **Integrity**: 1 GiB through ``sockit relay`` over TCP/IPv4, TCP/IPv6 and UNIX
   arrives with the same SHA-256 (generated and hashed while streaming).
2. **Half-close**: an oracle whose answer can only be computed after EOF (the SHA-256 of
   everything received) must travel back through the still-open direction: the client
   half-closes first, or the backend does while the client keeps sending.
3. **Resets are never laundered into EOF**: a backend reset reaches the client as a
   reset, a client reset reaches the backend as a reset, 200 of 200, and the relay's
   file descriptor count returns to its baseline: through the CLI, and through the
   library on each event loop (which tells a loop-specific failure from a pump bug).
4. **Backpressure**: a writer offering 1 GB to a reader draining 640 KiB/s does not grow
   the relay's memory (peak RSS within idle + 16 MiB).
5. **10,000 concurrent idle connections**, each proved end to end by an echo, all closed
   cleanly, after which the relay holds no more descriptors than before. 10,000 relayed
   connections hold 20,000 sockets, over one process's usual hard limit of 20,000, so
   that run uses ``--workers 2``; the default run also proves 2,000 in one process.

Also: the CLI prints the real port when given port 0, and exits 0 on SIGTERM.

The default run does smaller versions of the long soaks; ``-m slow`` (``python3 dev.py
test --slow``) runs the full ones: the 100-try half-close oracle with sizes up to 64 MiB,
the 10 s backpressure run. Every loop is bounded in count and time, every socket has a
timeout, and every process started here is stopped by its pid in a ``finally``. These
tests must never touch an address other than loopback or a private temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest

from sockit.relay.pump import COPY_BUFFER, PIPE_SIZE
from sockit.relay.runner import Relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

TIMEOUT = 10.0
"""Seconds any one socket operation or process exit may take on a loaded 2-core box."""
START_SECONDS = 20.0
"""Seconds a subprocess may take to start and print its address (cold imports)."""
SETTLE_SECONDS = 5.0
"""Seconds the relay may take to close what a finished connection held."""
LISTENING = re.compile(r"Listening on (\S+)")
HERE = Path(__file__).resolve().parent
ECHO_SCRIPT = HERE / "_acceptance_echo.py"

# The data: one random block, reused, with a counter stamped at the start of every
# chunk, so a lost, repeated or reordered chunk changes the digest. Making the data
# costs nothing; hashing (about 1.7 GB/s here) is the only per-byte work of the test.
BLOCK = os.urandom(MiB)

SPLICE_PATHS = [pytest.param(True, id="splice"), pytest.param(False, id="copy")]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


# --- data -----------------------------------------------------------------------------


class Source:
    """``size`` bytes of test data made chunk by chunk, hashed as they are made.

    A chunk is a view of one reused buffer: send it before asking for the next one.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.remaining = size
        self.counter = (seed & 0xFFFF_FFFF) << 32
        self.buffer = bytearray(BLOCK)
        self.hash = hashlib.sha256()

    def chunk(self, limit: int = MiB) -> memoryview | None:
        """The next at most ``limit`` bytes, or ``None`` when all were made."""
        if self.remaining == 0:
            return None
        n = min(limit, self.remaining, len(self.buffer))
        self.buffer[:8] = self.counter.to_bytes(8, "big")
        self.counter += 1
        piece = memoryview(self.buffer)[:n]
        self.hash.update(piece)
        self.remaining -= n
        return piece

    def digest(self) -> bytes:
        return self.hash.digest()


def hex_of(digest: bytes) -> str:
    return digest.hex()[:16]


def trial_sizes(rng: random.Random, tries: int, max_size: int) -> list[int]:
    """``tries`` sizes: 0 and 1 first, then the pump's buffer edges, then random ones."""
    edges = [0, 1, COPY_BUFFER + 1, PIPE_SIZE - 1, PIPE_SIZE + 1]
    sizes = [size for size in edges if size <= max_size][:tries]
    sizes += [rng.randint(0, max_size) for _ in range(tries - len(sizes))]
    return sizes


def set_linger_zero(sock: socket.socket) -> None:
    """Make ``close()`` send a RST instead of a FIN (socket(7), SO_LINGER)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- processes ------------------------------------------------------------------------


def _set_nofile(limit: int) -> None:
    """preexec_fn: raise RLIMIT_NOFILE in the child (needs CAP_SYS_RESOURCE above hard)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def _spawn(argv: list[str], *, nofile: int | None, **kwargs: Any) -> subprocess.Popen[bytes]:
    preexec = None if nofile is None else functools.partial(_set_nofile, nofile)
    try:
        # preexec_fn only where asked: the limit must be set before the child execs.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,  # noqa: PLW1509
            **kwargs,
        )
    except subprocess.SubprocessError as error:
        if nofile is None:
            raise
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        pytest.skip(
            f"cannot raise RLIMIT_NOFILE to {nofile} for a child (hard limit {hard}; going "
            f"above it needs CAP_SYS_RESOURCE): {error}"
        )


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0]) * KiB
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (a relay with ``--workers`` relays in its children)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
        pids += [int(child) for child in children.split()]
    return pids


def tree_rss(pid: int) -> int:
    """VmRSS of ``pid`` and its children, in bytes."""
    return sum(proc_status(member, "VmRSS") for member in process_tree(pid))


def fd_count(pid: int) -> int:
    """Open fds of ``pid`` and its children."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):  # a worker that just exited
            total += len(os.listdir(f"/proc/{member}/fd"))
    return total


class RelayProcess:
    """A ``python -m sockit relay ARGS...`` subprocess and what it printed on stderr.

    Its stderr pipe is enlarged to 1 MiB and read at every look, so a chatty relay
    never blocks on a full pipe during a test.
    """

    def __init__(self, args: Sequence[str], *, nofile: int | None = None) -> None:
        self.args = list(args)
        self.process = _spawn(
            [sys.executable, "-m", "sockit", "relay", *self.args],
            nofile=nofile,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        self._stderr = self.process.stderr
        self._stderr_fd = self._stderr.fileno()
        with contextlib.suppress(OSError):  # over pipe-max-size: keep the default
            fcntl.fcntl(self._stderr_fd, fcntl.F_SETPIPE_SZ, MiB)
        os.set_blocking(self._stderr_fd, False)
        self.stderr = b""
        self.addresses: list[str] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def text(self) -> str:
        self.read_stderr()
        return self.stderr.decode(errors="replace")

    def read_stderr(self) -> None:
        """Take what the relay wrote so far (never blocks)."""
        if self._stderr.closed:
            return
        for _ in range(64):
            try:
                chunk = os.read(self._stderr_fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.stderr += chunk

    def wait_listening(self, count: int = 1) -> list[str]:
        """Read stderr until ``count`` ``Listening on ADDR`` lines; the addresses."""
        deadline = time.monotonic() + START_SECONDS
        with selectors.DefaultSelector() as selector:
            selector.register(self._stderr_fd, selectors.EVENT_READ)
            while len(self.addresses) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no 'Listening on' line from the relay: {self.text!r}"
                if not selector.select(remaining):
                    continue
                before = len(self.stderr)
                self.read_stderr()
                if len(self.stderr) == before:  # EOF: the relay exited
                    self.process.wait(TIMEOUT)
                    pytest.fail(f"relay exited {self.process.returncode}: {self.text!r}")
                self.addresses = LISTENING.findall(self.stderr.decode(errors="replace"))
        return self.addresses

    def fd_count(self) -> int:
        self.read_stderr()
        return fd_count(self.pid)

    def wait_fd_count(self, target: int, seconds: float = SETTLE_SECONDS) -> int:
        """Poll until the relay holds ``target`` fds or ``seconds`` pass; the last count.

        Polled because nothing outside the relay signals "the last fd was closed"; the
        loop is bounded by the deadline (and 10 ms steps).
        """
        deadline = time.monotonic() + seconds
        count = self.fd_count()
        for _ in range(int(seconds / 0.01) + 1):
            if count == target or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
            count = self.fd_count()
        return count

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait for the exit, take the rest of stderr; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"relay did not exit within {TIMEOUT} s of signal {sig}: {self.text!r}")
        self._finish_stderr()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL if still running; reap; close the pipe (idempotent)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)
        self._finish_stderr()

    def _finish_stderr(self) -> None:
        if self._stderr.closed:
            return
        os.set_blocking(self._stderr_fd, True)
        # The relay has exited and has no children here: the pipe ends with EOF; 1 MiB
        # of pipe and 64 KiB reads bound the loop.
        for _ in range(1024):
            chunk = os.read(self._stderr_fd, 65536)
            if not chunk:
                break
            self.stderr += chunk
        self._stderr.close()


@contextlib.contextmanager
def relay_process(args: Sequence[str], *, nofile: int | None = None) -> Iterator[RelayProcess]:
    relay = RelayProcess(args, nofile=nofile)
    try:
        yield relay
    finally:
        relay.kill()


def address_port(address: str) -> int:
    """The port of a printed ``HOST:PORT`` or ``[V6]:PORT``."""
    return int(address.rsplit(":", 1)[1])


# --- threads ---------------------------------------------------------------------------

_T = TypeVar("_T")


class Worker(threading.Thread, Generic[_T]):
    """Run ``target`` in a thread; :meth:`outcome` joins it and returns or re-raises."""

    def __init__(self, target: Callable[[], _T], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_function = target
        self._result: _T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = self._target_function()
        except BaseException as error:  # handed to the joining thread
            self._error = error

    def outcome(self, timeout: float) -> _T:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout} s"
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


# --- a backend and a relay between the test's client and it ------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private (0700) directory with a short path: sun_path holds only 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="sockit-acc-") as name:
        yield Path(name)


def backend_listener(transport: str, directory: Path) -> socket.socket:
    """A listening socket for the backend: ``tcp4``/``tcp`` 127.0.0.1, ``tcp6`` ::1,
    ``unix`` a socket file in ``directory``. Blocking, with a timeout."""
    family = {"tcp4": socket.AF_INET, "tcp": socket.AF_INET, "tcp6": socket.AF_INET6}.get(
        transport, socket.AF_UNIX
    )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            sock.bind(str(directory / "backend.sock"))
        else:
            sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        sock.listen(socket.SOMAXCONN)
        sock.settimeout(TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


def relay_endpoints(transport: str, backend: socket.socket, directory: Path) -> tuple[str, str]:
    """The relay's SRC (listening on port 0 or a socket file) and DST (the backend)."""
    if transport == "unix":
        return f"unix-listen:{directory / 'relay.sock'}", f"unix:{backend.getsockname()}"
    port = backend.getsockname()[1]
    if transport == "tcp6":
        return "tcp-listen:[::1]:0", f"tcp:[::1]:{port}"
    return "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{port}"


@dataclass
class Route:
    """Client -> relay subprocess -> backend listening in this process."""

    family: int
    address: tuple[str, int] | str
    backend: socket.socket
    relay: RelayProcess

    def connect(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(TIMEOUT)
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def accept(self) -> socket.socket:
        conn, _ = self.backend.accept()
        conn.settimeout(TIMEOUT)
        return conn


@contextlib.contextmanager
def relay_route(transport: str, directory: Path, *options: str) -> Iterator[Route]:
    """A backend, and ``sockit relay [OPTIONS] SRC DST`` in front of it; on a normal
    exit the relay must stop with status 0 on SIGTERM."""
    backend = backend_listener(transport, directory)
    try:
        src, dst = relay_endpoints(transport, backend, directory)
        # A UNIX listener has no kernel-chosen port, so only -v prints its address;
        # the line is how the test knows the relay is ready.
        verbose = ("-v",) if transport == "unix" else ()
        with relay_process([*verbose, *options, src, dst]) as relay:
            printed = relay.wait_listening()[0]
            address: tuple[str, int] | str
            if transport == "unix":
                assert printed == f"unix:{directory / 'relay.sock'}", printed
                family, address = socket.AF_UNIX, str(directory / "relay.sock")
            elif transport == "tcp6":
                assert printed.startswith("[::1]:"), printed
                family, address = socket.AF_INET6, ("::1", address_port(printed))
            else:
                assert printed.startswith("127.0.0.1:"), printed
                family, address = socket.AF_INET, ("127.0.0.1", address_port(printed))
            if transport != "unix":
                assert address_port(printed) != 0, printed
            yield Route(family, address, backend, relay)
            status = relay.stop()
            assert status == 0, f"relay exited {status} on SIGTERM: {relay.text!r}"
    finally:
        backend.close()


def receive_until_eof(sock: socket.socket, limit: int) -> bytes:
    """Everything until EOF (bounded: more than ``limit`` bytes fails)."""
    data = bytearray()
    for _ in range(limit + 2):
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
        assert len(data) <= limit, f"more than {limit} bytes before EOF"
    raise AssertionError("unreachable: every recv returns at least one byte")


# --- 1. integrity ------------------------------------------------------------------------

INTEGRITY_SIZE = GiB
"""1 GiB in the default run: each case takes 2 to 3 s on a 2-core box (hashing on both
sides included), so the three transports take under 8 s per copy path, well inside
the 30 s budget that would otherwise send the full size to ``-m slow``."""


def _backend_hashes(route: Route, limit: int) -> tuple[int, bytes]:
    """Accept one connection, hash it to EOF, answer with the digest, close."""
    with route.accept() as conn:
        digest = hashlib.sha256()
        buffer = bytearray(MiB)
        view = memoryview(buffer)
        total = 0
        for _ in range(limit + 2):
            n = conn.recv_into(buffer)
            if n == 0:
                break
            digest.update(view[:n])
            total += n
            assert total <= limit, f"backend received more than the {limit} bytes sent"
        conn.sendall(digest.digest())
    return total, digest.digest()


def stream_through(route: Route, size: int, seed: int) -> None:
    """Send ``size`` bytes through the relay, half-close; the backend's answer (the
    SHA-256 of what it got, sent after EOF) must match, then EOF."""
    receiver = Worker(lambda: _backend_hashes(route, size), name="acceptance-backend")
    receiver.start()
    try:
        with route.connect() as client:
            source = Source(size, seed)
            for _ in range(size // MiB + 2):
                chunk = source.chunk()
                if chunk is None:
                    break
                client.sendall(chunk)
            client.shutdown(socket.SHUT_WR)
            answer = receive_until_eof(client, 32)
    finally:
        # The backend's socket timeouts end the thread within TIMEOUT even on failure.
        received, digest = receiver.outcome(TIMEOUT * 3)
    assert received == size, f"backend received {received} of {size} bytes"
    assert digest == source.digest(), (
        f"data corrupted: sent sha256 {hex_of(source.digest())}, received {hex_of(digest)}"
    )
    assert answer == digest, f"the answer after EOF came back as {answer!r}"


@pytest.mark.parametrize("splice", SPLICE_PATHS)
@pytest.mark.parametrize("transport", ["tcp4", pytest.param("tcp6", marks=needs_ipv6), "unix"])
def test_one_gibibyte_arrives_intact(transport: str, splice: bool, short_dir: Path) -> None:
    options = () if splice else ("--no-splice",)
    with relay_route(transport, short_dir, *options) as route:
        stream_through(route, INTEGRITY_SIZE, seed=1)


# --- 2. half-close -----------------------------------------------------------------------

DEFAULT_TRIES, DEFAULT_MAX_SIZE = 10, 4 * MiB
SLOW_TRIES, SLOW_MAX_SIZE = 100, 64 * MiB
TRIAL_SECONDS = 30.0
"""A whole try (up to 64 MiB and back, client, relay and backend on one thread)."""
DIGEST_SIZE = 32


async def _connect(family: int, address: tuple[str, int] | str) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _accept(listener: socket.socket) -> socket.socket:
    conn, _ = await asyncio.get_running_loop().sock_accept(listener)
    conn.setblocking(False)
    return conn


async def _send(sock: socket.socket, source: Source, count: int | None = None) -> None:
    """Send ``count`` more bytes of ``source`` (all that is left if ``None``)."""
    loop = asyncio.get_running_loop()
    left = source.remaining if count is None else count
    for _ in range(left // COPY_BUFFER + 2):
        chunk = source.chunk(min(COPY_BUFFER, left)) if left else None
        if chunk is None:
            return
        await loop.sock_sendall(sock, chunk)
        left -= len(chunk)
    raise AssertionError("unreachable: every chunk is at least one byte")


async def _receive(sock: socket.socket, limit: int, keep_tail: int = 0) -> tuple[bytes, bytes]:
    """Hash everything until EOF except the last ``keep_tail`` bytes; (digest, tail).

    More than ``limit`` bytes fails (it also bounds the loop).
    """
    loop = asyncio.get_running_loop()
    digest = hashlib.sha256()
    buffer = bytearray(COPY_BUFFER)
    view = memoryview(buffer)
    tail = bytearray()
    total = 0
    for _ in range(limit + 2):
        n = await loop.sock_recv_into(sock, buffer)
        if n == 0:
            break
        total += n
        assert total <= limit, f"more than the {limit} bytes sent arrived"
        tail += view[:n]
        if len(tail) > keep_tail:
            cut = len(tail) - keep_tail
            digest.update(memoryview(tail)[:cut])
            del tail[:cut]
    return digest.digest(), bytes(tail)


async def client_eof_first(
    listener: socket.socket, family: int, address: tuple[str, int] | str, size: int, seed: int
) -> None:
    """The client sends ``size`` bytes and half-closes; the backend answers with the
    digest of what it received (computable only after EOF), then closes."""

    async def backend() -> bytes:
        with await _accept(listener) as conn:
            digest, _ = await _receive(conn, size)
            await asyncio.get_running_loop().sock_sendall(conn, digest)
        return digest

    async def client() -> tuple[bytes, bytes]:
        with await _connect(family, address) as sock:
            source = Source(size, seed)
            await _send(sock, source)
            sock.shutdown(socket.SHUT_WR)
            _, answer = await _receive(sock, DIGEST_SIZE, keep_tail=DIGEST_SIZE)
        return source.digest(), answer

    async with asyncio.TaskGroup() as group:
        received = group.create_task(backend())
        sent = group.create_task(client())
    sent_digest, answer = sent.result()
    assert received.result() == sent_digest, "backend received other bytes than were sent"
    assert answer == sent_digest, f"the answer after EOF came back as {answer.hex()}"


async def backend_eof_first(
    listener: socket.socket,
    family: int,
    address: tuple[str, int] | str,
    size: int,
    seed: int,
    client_before: int,
    client_after: int,
) -> None:
    """The backend sends ``size`` bytes and half-closes while the client is sending
    ``client_before`` bytes; after the backend's EOF the client sends ``client_after``
    more bytes and the digest of what it received, then half-closes. The backend finds
    its own digest at the end of what it received."""

    async def backend() -> tuple[bytes, bytes]:
        with await _accept(listener) as conn:
            source = Source(size, seed)

            async def send_then_eof() -> None:
                await _send(conn, source)
                conn.shutdown(socket.SHUT_WR)

            async with asyncio.TaskGroup() as group:
                group.create_task(send_then_eof())
                receiving = group.create_task(
                    _receive(conn, client_before + client_after + DIGEST_SIZE, DIGEST_SIZE)
                )
        prefix, answer = receiving.result()
        assert answer == source.digest(), (
            f"the client's answer after the backend's EOF came back as {answer.hex()}"
        )
        return prefix, answer

    async def client() -> bytes:
        loop = asyncio.get_running_loop()
        with await _connect(family, address) as sock:
            source = Source(client_before + client_after, seed + 1)
            async with asyncio.TaskGroup() as group:
                group.create_task(_send(sock, source, client_before))
                receiving = group.create_task(_receive(sock, size))
            received, _ = receiving.result()
            # The backend's EOF has arrived: this direction must still carry data.
            await _send(sock, source)
            await loop.sock_sendall(sock, received)
            sock.shutdown(socket.SHUT_WR)
        return source.digest()

    async with asyncio.TaskGroup() as group:
        backend_task = group.create_task(backend())
        client_task = group.create_task(client())
    prefix, _ = backend_task.result()
    assert prefix == client_task.result(), "backend received other bytes than the client sent"


@contextlib.asynccontextmanager
async def in_process_relay(src: str, dst: str, *, splice: bool) -> AsyncIterator[Relay]:
    """:class:`Relay` serving on this loop; cancelled (and awaited) at the end."""
    relay = Relay(src, dst, splice=splice)
    await relay.start()
    task = asyncio.get_running_loop().create_task(relay.run(), name="relay")
    try:
        yield relay
        assert not task.done(), f"the relay stopped by itself: {task!r}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> None:
    """Poll ``predicate`` on the loop (10 ms steps, bounded by ``seconds``).

    The relay's counters change without an event a test could await.
    """
    for _ in range(int(seconds / 0.01) + 1):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"not within {seconds} s"


async def half_close_trials(
    transport: str, direction: str, splice: bool, directory: Path, tries: int, max_size: int
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    sizes = trial_sizes(rng, tries, max_size)
    listener = backend_listener(transport, directory)
    listener.setblocking(False)
    try:
        src, dst = relay_endpoints(transport, listener, directory)
        async with in_process_relay(src, dst, splice=splice) as relay:
            sockaddr = relay.addresses[0].to_sockaddr()
            address = (
                sockaddr if isinstance(sockaddr, str) else (str(sockaddr[0]), int(sockaddr[1]))
            )
            family = listener.family
            sent = received = 0
            for trial, size in enumerate(sizes):
                where = f"try {trial + 1} of {tries} ({size} bytes, seed {seed})"
                async with asyncio.timeout(TRIAL_SECONDS):
                    try:
                        if direction == "client-eof-first":
                            await client_eof_first(listener, family, address, size, trial)
                            sent += size
                            received += DIGEST_SIZE
                        else:
                            before, after = rng.randint(0, size), rng.randint(1, 64 * KiB)
                            await backend_eof_first(
                                listener, family, address, size, trial, before, after
                            )
                            sent += before + after + DIGEST_SIZE
                            received += size
                    except* (AssertionError, OSError) as group:
                        raise AssertionError(f"{where}: {group.exceptions!r}") from group
            # The relay's own account: every connection clean, every byte counted.
            await wait_until(lambda: relay.stats.active == 0)
            stats = relay.stats
            assert (stats.connections, stats.clean, stats.failed) == (tries, tries, 0), stats
            assert (stats.bytes_forward, stats.bytes_backward) == (sent, received), stats
    finally:
        listener.close()


HALF_CLOSE_CASES = [
    pytest.param(transport, direction, splice, id=f"{transport}-{direction}-{label}")
    for transport in ("tcp", "unix")
    for direction in ("client-eof-first", "backend-eof-first")
    for splice, label in ((True, "splice"), (False, "copy"))
]


@pytest.mark.parametrize(("transport", "direction", "splice"), HALF_CLOSE_CASES)
def test_half_close_oracle(
    run: Callable[..., Any], transport: str, direction: str, splice: bool, short_dir: Path
) -> None:
    run(
        half_close_trials,
        transport,
        direction,
        splice,
        short_dir,
        DEFAULT_TRIES,
        DEFAULT_MAX_SIZE,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("transport", "direction", "splice"), HALF_CLOSE_CASES)
def test_half_close_oracle_100_of_100(
    run: Callable[..., Any], transport: str, direction: str, splice: bool, short_dir: Path
) -> None:
    run(half_close_trials, transport, direction, splice, short_dir, SLOW_TRIES, SLOW_MAX_SIZE)


# --- 3. resets ---------------------------------------------------------------------------

RESET_TRIES = 200
RESET_MAX_SIZE = 256 * KiB
RESET_PATIENCE = 2.0
"""Seconds a reader waits for the reset (on loopback it follows in microseconds)."""
RESET_FAILURES_SHOWN = 3
"""A run stops after this many tries without a reset: enough to diagnose, and a hung
try costs RESET_PATIENCE each."""


def _outcome_of_reading(sock: socket.socket, limit: int) -> tuple[str, bytes]:
    """Read until EOF or an error: ("reset"|"eof"|"timeout"|other error, data)."""
    data = bytearray()
    try:
        for _ in range(limit + 2):
            chunk = sock.recv(65536)
            if not chunk:
                return "eof", bytes(data)
            data += chunk
            if len(data) > limit:
                return "too much data", bytes(data)
    except ConnectionResetError:
        return "reset", bytes(data)
    except TimeoutError:
        return "timeout", bytes(data)
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, repr(error)), bytes(data)
    return "too much data", bytes(data)


def _clean_exchange(route: Route) -> None:
    """One connection that ends well both ways (also proves the relay still serves)."""
    with route.connect() as client:
        client.sendall(b"ping")
        client.shutdown(socket.SHUT_WR)
        with route.accept() as conn:
            assert receive_until_eof(conn, 4) == b"ping"
            conn.sendall(b"pong")
        assert receive_until_eof(client, 4) == b"pong"


def reset_trials(route: Route, trial: Callable[[random.Random], tuple[str, str]]) -> None:
    """Run ``trial`` RESET_TRIES times (it returns an outcome and a description); all
    must be resets, then the relay must hold exactly the fds it held before."""
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    baseline = route.relay.fd_count()
    failures: list[str] = []
    tries = 0
    for tries in range(1, RESET_TRIES + 1):
        outcome, description = trial(rng)
        if outcome != "reset":
            failures.append(f"try {tries}: {outcome} ({description})")
            if len(failures) >= RESET_FAILURES_SHOWN:
                break
    assert not failures, (
        f"{len(failures)} of {tries} tries ended without a reset (seed {seed}; stopped "
        f"after {RESET_FAILURES_SHOWN} failures): {failures}; relay stderr: "
        f"{route.relay.text[-2000:]!r}"
    )
    count = route.relay.wait_fd_count(baseline)
    assert count == baseline, f"relay holds {count} fds, {baseline} before the resets"
    _clean_exchange(route)
    assert route.relay.wait_fd_count(baseline) == baseline


@pytest.mark.parametrize("splice", SPLICE_PATHS)
def test_backend_reset_reaches_the_client_as_a_reset(splice: bool, short_dir: Path) -> None:
    def trial(rng: random.Random) -> tuple[str, str]:
        payload = rng.randbytes(rng.randint(0, RESET_MAX_SIZE))
        with route.connect() as client:
            with route.accept() as conn:
                conn.sendall(payload)
                set_linger_zero(conn)
            client.settimeout(RESET_PATIENCE)
            outcome, received = _outcome_of_reading(client, len(payload))
        # A reset discards what the backend had not transmitted yet: a prefix arrives.
        assert payload.startswith(received), "the client received other bytes"
        return outcome, f"client got {len(received)} of {len(payload)} bytes"

    options = () if splice else ("--no-splice",)
    with relay_route("tcp4", short_dir, *options) as route:
        reset_trials(route, trial)


@pytest.mark.parametrize("splice", SPLICE_PATHS)
def test_client_reset_reaches_the_backend_as_a_reset(splice: bool, short_dir: Path) -> None:
    def trial(rng: random.Random) -> tuple[str, str]:
        payload = rng.randbytes(rng.randint(1, RESET_MAX_SIZE))
        with route.connect() as client, route.accept() as conn:
            client.sendall(payload[:1])
            # The first byte arrived: the relay's two legs exist end to end.
            first = conn.recv(1)
            assert first == payload[:1], f"backend got {first!r} first"
            client.sendall(payload[1:])
            set_linger_zero(client)
            client.close()
            conn.settimeout(RESET_PATIENCE)
            outcome, received = _outcome_of_reading(conn, len(payload) - 1)
        assert payload[1:].startswith(received), "the backend received other bytes"
        return outcome, f"backend got {len(received) + 1} of {len(payload)} bytes"

    options = () if splice else ("--no-splice",)
    with relay_route("tcp4", short_dir, *options) as route:
        reset_trials(route, trial)


async def _outcome_of_reading_async(sock: socket.socket, limit: int) -> tuple[str, bytes]:
    """:func:`_outcome_of_reading` on the running loop, RESET_PATIENCE per receive."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    try:
        for _ in range(limit + 2):
            async with asyncio.timeout(RESET_PATIENCE):
                chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return "eof", bytes(data)
            data += chunk
            if len(data) > limit:
                return "too much data", bytes(data)
    except ConnectionResetError:
        return "reset", bytes(data)
    except TimeoutError:
        return "timeout", bytes(data)
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, repr(error)), bytes(data)
    return "too much data", bytes(data)


async def in_process_reset_trials(who_resets: str, splice: bool, directory: Path) -> None:
    """RESET_TRIES resets through :class:`Relay` on this loop; then this process holds
    exactly the fds it held with the relay idle."""
    loop = asyncio.get_running_loop()
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    listener = backend_listener("tcp", directory)
    listener.setblocking(False)
    family = listener.family
    try:
        src, dst = relay_endpoints("tcp", listener, directory)
        async with in_process_relay(src, dst, splice=splice) as relay:
            sockaddr = relay.addresses[0].to_sockaddr()
            assert isinstance(sockaddr, tuple)
            address = (sockaddr[0], sockaddr[1])
            baseline = fd_count(os.getpid())
            failures: list[str] = []
            tries = 0
            for tries in range(1, RESET_TRIES + 1):
                payload = rng.randbytes(rng.randint(1, RESET_MAX_SIZE))
                with await _connect(family, address) as client:
                    with await _accept(listener) as conn:
                        if who_resets == "backend":
                            await loop.sock_sendall(conn, payload)
                            set_linger_zero(conn)
                            conn.close()
                            reader, expected = client, payload
                        else:
                            await loop.sock_sendall(client, payload[:1])
                            assert await loop.sock_recv(conn, 1) == payload[:1]
                            await loop.sock_sendall(client, payload[1:])
                            set_linger_zero(client)
                            client.close()
                            reader, expected = conn, payload[1:]
                        outcome, received = await _outcome_of_reading_async(reader, len(expected))
                assert expected.startswith(received), "other bytes arrived"
                if outcome != "reset":
                    failures.append(
                        f"try {tries}: {outcome} after {len(received)} of {len(expected)} bytes"
                    )
                    if len(failures) >= RESET_FAILURES_SHOWN:
                        break
            assert not failures, (
                f"{len(failures)} of {tries} tries ended without a reset (seed {seed}; "
                f"stopped after {RESET_FAILURES_SHOWN} failures): {failures}"
            )
            await wait_until(lambda: relay.stats.active == 0)
            assert relay.stats.failed == RESET_TRIES, relay.stats
            await wait_until(lambda: fd_count(os.getpid()) == baseline)
    finally:
        listener.close()


@pytest.mark.parametrize("splice", SPLICE_PATHS)
@pytest.mark.parametrize("who_resets", ["backend", "client"])
def test_resets_through_the_library_relay(
    run: Callable[..., Any], who_resets: str, splice: bool, short_dir: Path
) -> None:
    run(in_process_reset_trials, who_resets, splice, short_dir)


# --- 4. backpressure ---------------------------------------------------------------------

READ_RATE = 640 * KiB
"""Bytes per second the slow reader takes."""
TICK = 0.1
OFFERED = 1_000_000_000
RSS_ALLOWANCE = 16 * MiB


def _sysctl_max(name: str) -> int:
    """The maximum (third) field of a tcp_rmem/tcp_wmem sysctl (4 MiB if unreadable)."""
    try:
        text = Path(f"/proc/sys/net/ipv4/{name}").read_text(encoding="ascii")
    except OSError:
        return 4 * MiB
    return int(text.split()[2])


def offer_to_slow_reader(
    writer: socket.socket, reader: socket.socket, seconds: float, on_tick: Callable[[], None]
) -> tuple[int, int]:
    """For ``seconds``: write as fast as ``writer`` takes (up to OFFERED bytes) while
    ``reader`` takes READ_RATE bytes per second; call ``on_tick`` ten times a second.
    Returns (bytes sent, bytes received)."""
    writer.setblocking(False)
    reader.setblocking(False)
    chunk = memoryview(BLOCK)[: 256 * KiB]
    sent = received = 0
    start = time.monotonic()
    end = start + seconds
    next_tick = start + TICK
    with selectors.DefaultSelector() as selector:
        selector.register(writer, selectors.EVENT_WRITE)
        # Each round sends at least one byte or waits for the next tick: bounded by
        # OFFERED and by time.
        for _ in range(OFFERED // 1024 + int(seconds / TICK) + 2):
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_tick:
                next_tick += TICK
                allowance = int((now - start) * READ_RATE) - received
                for _ in range(allowance // 65536 + 1):
                    if allowance <= 0:
                        break
                    try:
                        data = reader.recv(min(allowance, 65536))
                    except BlockingIOError:
                        break
                    assert data, "the reader saw EOF during the transfer"
                    received += len(data)
                    allowance -= len(data)
                on_tick()
                continue
            wait = max(0.0, min(next_tick, end) - now)
            if sent >= OFFERED:
                time.sleep(wait)  # pacing the reader, not waiting for an event
                continue
            if not selector.select(wait):
                continue
            try:
                sent += writer.send(chunk[: OFFERED - sent])
            except BlockingIOError:
                continue
    return sent, received


def backpressure_run(seconds: float, splice: bool, directory: Path) -> None:
    options = () if splice else ("--no-splice",)
    with relay_route("tcp4", directory, *options) as route:
        relay = route.relay
        baseline = relay.fd_count()
        _clean_exchange(route)  # imports and lazy set-up happen before the measurement
        assert relay.wait_fd_count(baseline) == baseline
        idle = proc_status(relay.pid, "VmRSS")
        try:
            # "5" resets VmHWM to the current RSS (proc(5), Linux >= 4.0).
            Path(f"/proc/{relay.pid}/clear_refs").write_text("5", encoding="ascii")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        samples = [idle]
        with route.connect() as writer, route.accept() as reader:
            sent, received = offer_to_slow_reader(
                writer, reader, seconds, lambda: samples.append(proc_status(relay.pid, "VmRSS"))
            )
            peak = max(samples)
            if hwm_reset:
                peak = max(peak, proc_status(relay.pid, "VmHWM"))
            # Neither side wants the rest: abort both (the relay's legs follow).
            set_linger_zero(writer)
            set_linger_zero(reader)
        assert relay.wait_fd_count(baseline) == baseline
    print(
        f"offered {OFFERED} bytes for {seconds} s: {sent} sent, {received} read; relay RSS "
        f"{idle // KiB} KiB idle, peak {peak // KiB} KiB"
    )
    assert received >= READ_RATE * seconds * 0.5, f"the reader got only {received} bytes"
    # Whatever the reader has not taken sits in kernel buffers: two sockets' send and
    # receive buffers at their sysctl maximum plus the relay's pipe or buffer.
    in_flight = 2 * (_sysctl_max("tcp_wmem") + _sysctl_max("tcp_rmem")) + PIPE_SIZE + MiB
    assert sent - received <= in_flight, (
        f"{sent - received} bytes unaccounted for (kernel buffers hold at most {in_flight})"
    )
    assert peak <= idle + RSS_ALLOWANCE, (
        f"relay RSS grew from {idle // KiB} KiB idle to {peak // KiB} KiB "
        f"while {sent} bytes were offered"
    )


@pytest.mark.parametrize("splice", SPLICE_PATHS)
def test_backpressure_keeps_relay_memory_flat(splice: bool, short_dir: Path) -> None:
    backpressure_run(3.0, splice, short_dir)


@pytest.mark.slow
@pytest.mark.parametrize("splice", SPLICE_PATHS)
def test_backpressure_keeps_relay_memory_flat_for_10_seconds(splice: bool, short_dir: Path) -> None:
    backpressure_run(10.0, splice, short_dir)


# --- 5. ten thousand idle connections ------------------------------------------------------

IDLE_CONNECTIONS = 10_000
IDLE_WORKERS = 2
"""The 10,000 run relays in two worker processes: an idle relayed connection holds two
sockets, so 10,000 need 20,000 fds plus a few, more than one process may open under
the usual hard limit of 20,000 (raising a hard limit needs CAP_SYS_RESOURCE, which
this sandbox lacks). Two workers hold about 10,000 each."""
IDLE_CONNECTIONS_DEFAULT = 2_000
"""The default run's count: fits the usual 20,000-fd hard limit without raising it."""
BATCH = 256
IDLE_SECONDS = 60.0
"""For opening (or closing) all of them."""


class EchoProcess:
    """``_acceptance_echo.py`` in a subprocess (its own RLIMIT_NOFILE)."""

    def __init__(self, nofile: int | None) -> None:
        self.process = _spawn(
            [sys.executable, str(ECHO_SCRIPT), "300"],
            nofile=nofile,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.process.stdout, selectors.EVENT_READ)
                ready = selector.select(START_SECONDS)
            line = self.process.stdout.readline().decode() if ready else ""
            assert line.startswith("port "), f"echo backend did not start: {line!r}"
        except BaseException:
            self.kill()
            raise
        self.port = int(line.split()[1])

    def stop(self) -> str:
        """SIGTERM; its last line (``max_open M accepted A``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=TIMEOUT)
        assert self.process.returncode == 0, f"echo backend: {err.decode()!r}"
        return out.decode().strip()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=TIMEOUT)


@contextlib.contextmanager
def own_nofile(needed: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE at least ``needed`` for a while."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        yield
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError) as error:
        pytest.skip(f"cannot raise this process's RLIMIT_NOFILE to {needed}: {error}")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Probe:
    """One client connection being opened: the token it sends and what came back."""

    token: bytes
    echoed: bytearray


def open_echoed(address: tuple[str, int], count: int, sockets: list[socket.socket]) -> None:
    """Open ``count`` connections to ``address`` (appended to ``sockets``), each sending
    a 4-byte token that must come back: proof the path to the backend exists."""
    deadline = time.monotonic() + IDLE_SECONDS
    for start in range(0, count, BATCH):
        with selectors.DefaultSelector() as selector:
            for index in range(start, min(start + BATCH, count)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setblocking(False)
                code = sock.connect_ex(address)
                assert code in {0, errno.EINPROGRESS}, os.strerror(code)
                selector.register(
                    sock, selectors.EVENT_WRITE, Probe(index.to_bytes(4), bytearray())
                )
            waiting = len(selector.get_map())
            for _ in range(4 * BATCH + 1000):
                if not waiting:
                    break
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{len(sockets) - waiting} of {count} opened in time"
                for key, events in selector.select(min(remaining, 1.0)):
                    client, probe = key.fileobj, key.data
                    assert isinstance(client, socket.socket)
                    assert isinstance(probe, Probe)
                    if events & selectors.EVENT_WRITE:
                        code = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        assert code == 0, f"connect: {os.strerror(code)}"
                        assert client.send(probe.token) == len(probe.token)
                        selector.modify(client, selectors.EVENT_READ, probe)
                        continue
                    data = client.recv(4 - len(probe.echoed))
                    assert data, f"EOF instead of the echo of {probe.token!r}"
                    probe.echoed += data
                    if len(probe.echoed) == 4:
                        assert probe.echoed == probe.token
                        selector.unregister(client)
                        waiting -= 1
            assert not waiting, f"{waiting} connections of batch {start // BATCH} unanswered"


def close_all_cleanly(sockets: list[socket.socket]) -> int:
    """Half-close every connection and wait for its EOF back; how many ended cleanly."""
    deadline = time.monotonic() + IDLE_SECONDS
    clean = 0
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.shutdown(socket.SHUT_WR)
            selector.register(sock, selectors.EVENT_READ)
        for _ in range(len(sockets) + 1000):
            if not selector.get_map():
                break
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{clean} of {len(sockets)} closed in time"
            for key, _ in selector.select(min(remaining, 1.0)):
                ended = key.fileobj
                assert isinstance(ended, socket.socket)
                selector.unregister(ended)
                with contextlib.suppress(OSError):
                    clean += ended.recv(1) == b""
    return clean


def wait_workers_settled(relay: RelayProcess, workers: int) -> None:
    """Wait until the relay's workers run and their fd count is steady (each opens its
    event loop's fds as it starts, after the parent printed its addresses)."""
    deadline = time.monotonic() + START_SECONDS
    last, steady = -1, 0
    for _ in range(int(START_SECONDS / 0.05) + 1):
        if time.monotonic() >= deadline:
            break
        count = relay.fd_count() if len(process_tree(relay.pid)) == workers + 1 else -1
        steady = steady + 1 if count == last and count >= 0 else 0
        if steady >= 4:
            return
        last = count
        time.sleep(0.05)
    raise AssertionError(f"the relay's {workers} workers did not settle: {process_tree(relay.pid)}")


def idle_connections_run(count: int, workers: int = 1) -> None:
    echo = EchoProcess(None)
    try:
        with relay_process(
            [
                *(["--workers", str(workers)] if workers > 1 else []),
                "tcp-listen:127.0.0.1:0",
                f"tcp:127.0.0.1:{echo.port}",
            ]
        ) as relay:
            address = ("127.0.0.1", address_port(relay.wait_listening()[0]))
            if workers > 1:
                wait_workers_settled(relay, workers)
            baseline = relay.fd_count()
            idle_rss = tree_rss(relay.pid)
            sockets: list[socket.socket] = []
            try:
                with own_nofile(count + 1024):
                    started = time.monotonic()
                    open_echoed(address, count, sockets)
                    opened = time.monotonic() - started
                    held = relay.fd_count() - baseline
                    per_connection = (tree_rss(relay.pid) - idle_rss) / count
                    print(
                        f"{count} connections opened in {opened:.1f} s; relay holds {held} "
                        f"more fds, RSS {per_connection / KiB:.2f} KiB per connection"
                    )
                    assert held >= 2 * count, f"relay holds only {held} more fds"
                    clean = close_all_cleanly(sockets)
                    assert clean == count, f"{clean} of {count} ended with a clean EOF"
            finally:
                for sock in sockets:
                    sock.close()
            count_after = relay.wait_fd_count(baseline, seconds=30.0)
            assert count_after == baseline, f"relay holds {count_after} fds, {baseline} before"
            assert relay.stop() == 0, relay.text
            assert "Traceback" not in relay.text, relay.text
        summary = echo.stop()
        fields = dict(zip(summary.split()[::2], map(int, summary.split()[1::2]), strict=True))
        assert fields["max_open"] == count, summary
    finally:
        echo.kill()


def test_two_thousand_idle_connections() -> None:
    idle_connections_run(IDLE_CONNECTIONS_DEFAULT)


@pytest.mark.timeout(300)
def test_ten_thousand_idle_connections() -> None:
    idle_connections_run(IDLE_CONNECTIONS, workers=IDLE_WORKERS)


# --- the CLI's address line and its end ----------------------------------------------------


def test_cli_prints_the_real_port_for_port_0_and_exits_0_on_sigterm(short_dir: Path) -> None:
    backend = backend_listener("tcp4", short_dir)
    try:
        port = backend.getsockname()[1]
        with relay_process(["tcp-listen:0", f"tcp:127.0.0.1:{port}"]) as relay:
            expected = 2 if has_ipv6_loopback() else 1
            addresses = relay.wait_listening(expected)
            ports = {address_port(address) for address in addresses}
            assert len(ports) == 1, addresses
            (relay_port,) = ports
            assert relay_port != 0
            wildcard = {"0.0.0.0", "[::]"} if expected == 2 else {"0.0.0.0"}
            assert {address.rsplit(":", 1)[0] for address in addresses} == wildcard
            hosts = [("127.0.0.1", socket.AF_INET)]
            if expected == 2:
                hosts.append(("::1", socket.AF_INET6))
            for host, family in hosts:
                route = Route(family, (host, relay_port), backend, relay)
                _clean_exchange(route)
            # A connection still open when the signal comes does not change the status.
            with socket.create_connection(("127.0.0.1", relay_port), timeout=TIMEOUT) as client:
                client.sendall(b"x")
                with Route(
                    socket.AF_INET, ("127.0.0.1", relay_port), backend, relay
                ).accept() as conn:
                    assert conn.recv(1) == b"x"
                    status = relay.stop(signal.SIGTERM)
                    outcome, _ = _outcome_of_reading(client, 0)
                    assert outcome in {"eof", "reset"}, outcome
            assert status == 0, f"relay exited {status} on SIGTERM: {relay.text!r}"
            assert "Traceback" not in relay.text, relay.text
    finally:
        backend.close()
