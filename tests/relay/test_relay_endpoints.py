"""The relay's endpoints and options over real sockets (loopback only), in-process and
through the ``sockit relay`` command.

* ``exec:``/``sh:`` behind ``tcp-listen:``: half-close through the child both ways, the
  connection's 4-tuple in the child's environment (``SOCKIT_*`` and ``NCAT_*``), only
  fds 0-2 in the child, a missing program resetting only its own client, and every
  child reaped (also one that ignores ``SIGTERM``).
* ``file:`` read (first endpoint) and written (second; truncated, or ``,append``).
* ``stdio`` through the CLI: bytes both ways byte-exact with half-close, exit codes 0
  (clean), 1 (reset, refused: one stderr line), 2 (malformed endpoint).
* ``udp:`` through the CLI: a datagram per stdin chunk, replies on stdout.
* Options: ``idle-timeout``, ``close-wait``, ``max-conns``, ``bind=``,
  ``connect-timeout``.
* ``--trace``, ``-v`` and ``--log-format json`` output.

The stream tests run on both pump paths (``splice`` and copy). In-process relays run on
their own event loop in a thread (:class:`RelayThread`), so the test drives plain
blocking sockets with timeouts; every loop is bounded in count and time, and every
process started here is stopped by its pid and waited for.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from conftest import child_pids, loop_factory
from sockit.aio._loop import new_event_loop
from sockit.relay.runner import Relay

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from types import TracebackType

    from sockit.addr import SocketAddress
    from sockit.relay.pump import PumpResult

TIMEOUT = 10.0
"""Seconds any single wait may take before the test fails (a loaded 2-core machine)."""

POLL_SECONDS = 0.01
"""Step of the few bounded polls for states no event announces (a file renamed into
place by a child, a counter of the relay)."""

SPLICE = pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- an in-process relay on its own loop and thread ------------------------------------------


class RelayThread:
    """``Relay(src, dst)`` started and run on a new event loop in a thread.

    Entering returns once the listening endpoints are bound (``addresses``/``port``);
    leaving stops the relay (cancels it like Ctrl-C would), joins the thread and fails
    the test if the loop reported an error or tasks were left behind. A one-shot relay
    ends by itself: :meth:`wait_result` returns its :class:`PumpResult`.
    """

    def __init__(
        self,
        src: str,
        dst: str,
        *,
        splice: bool = True,
        kill_grace: float | None = None,
        loop: Callable[[], asyncio.AbstractEventLoop] = new_event_loop,
    ) -> None:
        self.src, self.dst = src, dst
        self.splice = splice
        self.kill_grace = kill_grace
        self.loop_factory = loop
        self.addresses: list[SocketAddress] = []
        self.result: PumpResult | None = None
        self.error: BaseException | None = None
        self.loop_errors: list[dict[str, object]] = []
        self.relay: Relay | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._main, name="relay-under-test")

    # --- the test's side ---

    def __enter__(self) -> RelayThread:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            self.stop()
            pytest.fail("the relay did not start")
        if self.error is not None:
            self.stop()
            raise self.error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if kind is None:
            self.check()

    @property
    def port(self) -> int:
        """The port of the first listening address."""
        return self.addresses[0].port

    @property
    def stats_relay(self) -> Relay:
        assert self.relay is not None
        return self.relay

    def stop(self) -> None:
        """Cancel the relay (if still running) and join its thread (idempotent)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._request_stop)
        if self._thread.ident is not None:
            self._thread.join(TIMEOUT)
            assert not self._thread.is_alive(), "the relay thread did not stop"

    def wait_result(self) -> PumpResult | None:
        """Wait for a one-shot relay to end by itself; its result."""
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the one-shot relay did not end"
        self.check()
        return self.result

    def check(self) -> None:
        if self.error is not None:
            raise self.error
        assert not self.loop_errors, f"the relay's loop reported errors: {self.loop_errors}"

    def wait_until(self, predicate: Callable[[Relay], bool], what: str) -> None:
        """Poll (bounded) until ``predicate(relay)`` holds: its counters change on the
        relay's thread and no event announces them."""
        relay = self.stats_relay
        deadline = time.monotonic() + TIMEOUT
        for _ in range(int(TIMEOUT / POLL_SECONDS) + 1):
            if predicate(relay):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        pytest.fail(f"timed out waiting until {what}: {relay.stats}")

    # --- the relay's thread ---

    def _request_stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    def _main(self) -> None:
        loop = self.loop_factory()
        loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as error:
            self.error = error
        finally:
            self._ready.set()
            self._loop = None
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio  # noqa: PLC0415 (the module-level import is for typing only)

        options: dict[str, object] = {"splice": self.splice}
        if self.kill_grace is not None:
            options["kill_grace"] = self.kill_grace
        relay = Relay(self.src, self.dst, **options)  # type: ignore[arg-type]
        self.relay = relay
        stop: asyncio.Future[None] = loop.create_future()
        self._stop = stop
        self._loop = loop
        try:
            self.addresses = await relay.start()
        finally:
            self._ready.set()
        running = asyncio.ensure_future(relay.run())
        waiting: list[asyncio.Future[Any]] = [running, stop]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopped = not running.done()
        running.cancel()
        try:
            self.result = await running
        except asyncio.CancelledError:
            if not stopped:
                raise
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if others:
            _, pending = await asyncio.wait(others, timeout=TIMEOUT)
            assert not pending, f"the relay left tasks running: {pending}"


# --- blocking socket helpers -----------------------------------------------------------------


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection((host, port), timeout=TIMEOUT)


def recv_until_eof(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    """Everything until EOF (bounded by ``limit`` bytes and the socket's timeout)."""
    chunks: list[bytes] = []
    total = 0
    deadline = time.monotonic() + TIMEOUT
    while total <= limit:
        assert time.monotonic() < deadline, "no EOF in time"
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    pytest.fail(f"more than {limit} bytes without EOF")


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while len(data) < size:
        assert time.monotonic() < deadline, f"only {len(data)} of {size} bytes in time"
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return data


def round_trip(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` and expect it back (through ``cat``)."""
    sock.sendall(data)
    assert recv_exactly(sock, len(data)) == data


def reset(sock: socket.socket) -> None:
    """Close ``sock`` with SO_LINGER 0: its peer sees a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    sock.close()


def expect_reset(sock: socket.socket) -> None:
    """The relay reset ``sock``: a receive fails with ECONNRESET (never a clean EOF)."""
    with pytest.raises(ConnectionResetError):
        for _ in range(64):
            if not sock.recv(1 << 16):
                pytest.fail("clean EOF where a reset was expected")
        pytest.fail("data where a reset was expected")


def connect_expecting_reset(port: int) -> None:
    """Connect, send, and expect the relay to reset the connection: at the connect
    itself (on loopback the reset can arrive before ``connect()`` returns), on the
    send, or on the next receive. Never a clean EOF."""
    try:
        sock = connect(port)
    except ConnectionResetError:
        return
    with sock:
        send_expecting_reset(sock, b"hello", eof=False)


def send_expecting_reset(sock: socket.socket, data: bytes, *, eof: bool) -> None:
    """Send ``data`` (and EOF if asked) and expect a reset: on the send, the shutdown
    (ENOTCONN: the reset already closed the socket) or the next receive."""
    try:
        sock.sendall(data)
        if eof:
            sock.shutdown(socket.SHUT_WR)
    except OSError as error:
        if error.errno in {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN}:
            return
        raise
    expect_reset(sock)


@contextlib.contextmanager
def tcp_server() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1 (accept with a timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    try:
        yield listener
    finally:
        listener.close()


def accept(listener: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    conn, address = listener.accept()
    conn.settimeout(TIMEOUT)
    return conn, address


def sender(sock: socket.socket, data: bytes, *, eof: bool = True) -> threading.Thread:
    """Send ``data`` (then SHUT_WR) from a thread, so the test can read meanwhile."""

    def send() -> None:
        with contextlib.suppress(OSError):  # the test's assertions say what went wrong
            sock.sendall(data)
            if eof:
                sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, name="sender")
    thread.start()
    return thread


def wait_for_file(path: Path) -> bytes:
    """A file a child renames into place when done (no event announces it: poll)."""
    deadline = time.monotonic() + TIMEOUT
    for _ in range(int(TIMEOUT / POLL_SECONDS) + 1):
        if path.exists():
            return path.read_bytes()
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    pytest.fail(f"{path} did not appear")


def wait_no_children() -> None:
    """Every child of this process is gone (reaped, not a zombie)."""
    deadline = time.monotonic() + TIMEOUT
    for _ in range(int(TIMEOUT / POLL_SECONDS) + 1):
        if not child_pids():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    pytest.fail(f"children still there: {sorted(child_pids())}")


# --- exec: and sh: -------------------------------------------------------------------------

LOOPS = pytest.mark.parametrize("backend", ["uvloop", "asyncio"])


@LOOPS
@SPLICE
def test_exec_child_half_close_digest_then_eof(splice: bool, backend: str) -> None:
    data = os.urandom(1 << 20) + b"tail"
    expected = f"{hashlib.sha256(data).hexdigest()}  -\n".encode()
    with RelayThread(
        "tcp-listen:127.0.0.1:0", "exec:sha256sum", splice=splice, loop=loop_factory(backend)
    ) as relay:
        with connect(relay.port) as client:
            # sha256sum prints only after its stdin's EOF: our SHUT_WR must reach it as
            # EOF, and its exit must reach us as EOF after the digest.
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == expected
        relay.wait_until(lambda r: r.stats.clean == 1, "the connection ended cleanly")
        assert relay.stats_relay.stats.bytes_forward == len(data)
        assert relay.stats_relay.stats.bytes_backward == len(expected)


@LOOPS
@SPLICE
def test_sh_child_closes_stdout_first_and_keeps_reading(
    splice: bool,
    backend: str,
    tmp_path: Path,
) -> None:
    done = tmp_path / "received"
    part = shlex.quote(str(done) + ".part")
    command = f"printf early; exec >&-; cat > {part} && mv {part} {shlex.quote(str(done))}"
    data = os.urandom(300_000)
    with RelayThread(
        "tcp-listen:127.0.0.1:0", f"sh:{command}", splice=splice, loop=loop_factory(backend)
    ) as relay:
        with connect(relay.port) as client:
            # The child's output ends (EOF) while we have not ended ours ...
            assert recv_until_eof(client) == b"early"
            # ... and our direction keeps flowing into the child until our own EOF.
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            assert wait_for_file(done) == data
            relay.wait_until(lambda r: r.stats.clean == 1, "the connection ended cleanly")
            # The relay closed its side normally (no reset) once both ways were done.
            assert client.recv(1) == b""


ENVIRONMENT_NAMES = ("PROTO", "REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_child_environment_names_the_connection(host: str) -> None:
    if host == "::1" and not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    listen = f"tcp-listen:[{host}]:0" if ":" in host else f"tcp-listen:{host}:0"
    with RelayThread(listen, "exec:env") as relay:
        with connect(relay.port, host) as client:
            client.shutdown(socket.SHUT_WR)
            output = recv_until_eof(client).decode()
            client_port = client.getsockname()[1]
    variables = dict(line.partition("=")[::2] for line in output.splitlines())
    expected = {
        "PROTO": "TCP",
        "REMOTE_ADDR": host,
        "REMOTE_PORT": str(client_port),
        "LOCAL_ADDR": host,
        "LOCAL_PORT": str(relay.port),
    }
    for prefix in ("SOCKIT_", "NCAT_"):
        assert {name: variables.get(prefix + name) for name in ENVIRONMENT_NAMES} == expected


def test_child_gets_only_fds_0_to_2() -> None:
    # ls runs as a child of the shell, so its own directory fd is not in the listing;
    # the trailing ':' keeps the shell from exec'ing ls in its place.
    with RelayThread("tcp-listen:127.0.0.1:0", "sh:ls /proc/$$/fd; :") as relay:
        with connect(relay.port) as client:
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client).split() == [b"0", b"1", b"2"]


def test_missing_program_resets_only_its_client(tmp_path: Path) -> None:
    program = tmp_path / "prog"
    script = b"#!/bin/sh\nexec cat\n"
    program.write_bytes(script)
    program.chmod(0o755)
    with RelayThread("tcp-listen:127.0.0.1:0", f"exec:{program}") as relay:
        with connect(relay.port) as first:
            round_trip(first, b"before")
            program.unlink()
            # The program is gone: this client is reset ...
            connect_expecting_reset(relay.port)
            # ... the connection already running is untouched ...
            round_trip(first, b"after")
            first.shutdown(socket.SHUT_WR)
            assert recv_until_eof(first) == b""
        # ... and the relay keeps serving once the program is back.
        program.write_bytes(script)
        program.chmod(0o755)
        with connect(relay.port) as third:
            round_trip(third, b"again")
            third.shutdown(socket.SHUT_WR)
            assert recv_until_eof(third) == b""
        relay.wait_until(lambda r: r.stats.clean == 2, "two clean connections")
        assert relay.stats_relay.stats.failed == 1


def test_children_of_many_connections_are_reaped() -> None:
    with RelayThread("tcp-listen:127.0.0.1:0", "exec:cat") as relay:
        for number in range(20):
            with connect(relay.port) as client:
                round_trip(client, b"%d" % number)
                client.shutdown(socket.SHUT_WR)
                assert recv_until_eof(client) == b""
        relay.wait_until(lambda r: r.stats.clean == 20, "20 clean connections")
        # While the relay still runs: no child left, not even a zombie.
        wait_no_children()


@pytest.mark.parametrize(
    "command",
    [
        # blocked reading stdin when the client resets: SIGTERM at once
        "echo ready; exec cat >/dev/null",
        # ignores SIGTERM: SIGKILL after the grace periods
        "trap '' TERM; echo ready; exec sleep 30",
        # closed its stdio but lingers: SIGTERM after the grace period
        "echo ready; exec sleep 30 >&- <&-",
    ],
    ids=["blocked", "ignores-term", "lingers"],
)
def test_child_is_stopped_and_reaped_when_its_connection_ends(command: str) -> None:
    with RelayThread("tcp-listen:127.0.0.1:0", f"sh:{command}", kill_grace=0.2) as relay:
        client = connect(relay.port)
        try:
            assert recv_exactly(client, 6) == b"ready\n"
        finally:
            if "<&-" in command:
                client.shutdown(socket.SHUT_WR)  # both directions end: a clean end
                assert recv_until_eof(client) == b""
                client.close()
            else:
                reset(client)  # the relay aborts the connection and stops the child
        started = time.monotonic()
        wait_no_children()
        assert time.monotonic() - started < 5
        relay.wait_until(lambda r: r.stats.active == 0, "the connection ended")


# --- file: --------------------------------------------------------------------------------


@SPLICE
def test_file_as_source_arrives_then_eof(splice: bool, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    data = os.urandom(700_000)
    source.write_bytes(data)
    with tcp_server() as sink:
        port = sink.getsockname()[1]
        with RelayThread(f"file:{source}", f"tcp:127.0.0.1:{port}", splice=splice) as relay:
            conn, _ = accept(sink)
            with conn:
                assert recv_until_eof(conn) == data
                # What comes back to a file that is read is dropped, not an error.
                conn.sendall(b"dropped")
            result = relay.wait_result()
    assert result is not None
    assert (result.outcome, result.sent_a_to_b) == ("eof", len(data))


@SPLICE
@pytest.mark.parametrize("append", [False, True], ids=["truncate", "append"])
def test_file_as_destination(splice: bool, append: bool, tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old contents that are longer than nothing\n")
    before = target.read_bytes()
    data = os.urandom(500_000)
    dst = f"file:{target}" + (",append" if append else "")
    with RelayThread("tcp-listen:127.0.0.1:0", dst, splice=splice) as relay:
        with connect(relay.port) as client:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
            # A written file sends nothing back: EOF.
            assert recv_until_eof(client) == b""
        result = relay.wait_result()
    assert result is not None
    assert result.outcome == "eof"
    assert target.read_bytes() == (before + data if append else data)


def test_file_as_destination_is_created(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with RelayThread("tcp-listen:127.0.0.1:0", f"file:{target}") as relay:
        with connect(relay.port) as client:
            client.sendall(b"created")
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b""
        relay.wait_result()
    assert target.read_bytes() == b"created"


# --- the CLI: stdio and udp ---------------------------------------------------------------


def sockit_relay(*args: str, stdin: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sockit", "relay", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` (ours, by pid) if it still runs; wait; close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(TIMEOUT)
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def read_fd_exactly(fd: int, size: int) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while len(data) < size:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {data!r} in time"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, size - len(data))
            assert chunk, f"EOF after {data!r}"
            data += chunk
    return data


def read_fd_until_eof(fd: int) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no EOF in time after {data!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return data
            data += chunk


def stderr_lines(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("options", [[], ["--no-splice"]], ids=["splice", "copy"])
def test_cli_stdio_to_tcp_both_ways_byte_exact(options: list[str]) -> None:
    request = os.urandom(400_000)
    reply = os.urandom(300_000)
    received: list[bytes] = []
    with tcp_server() as server:
        port = server.getsockname()[1]

        def serve() -> None:
            conn, _ = accept(server)
            with conn:
                # Our stdin's EOF is the server's EOF; only then does it reply.
                received.append(recv_until_eof(conn))
                conn.sendall(reply)

        thread = threading.Thread(target=serve, name="server")
        thread.start()
        process = sockit_relay(*options, "-", f"tcp:127.0.0.1:{port}")
        try:
            stdout, stderr = process.communicate(request, timeout=TIMEOUT)
        finally:
            stop_process(process)
            thread.join(TIMEOUT)
    assert received == [request]
    assert stdout == reply
    assert process.returncode == 0, stderr
    assert stderr == b""


def test_cli_stdio_exit_1_with_one_line_when_the_server_resets() -> None:
    with tcp_server() as server:
        port = server.getsockname()[1]
        process = sockit_relay("-", f"tcp:127.0.0.1:{port}")
        try:
            conn, _ = accept(server)
            assert process.stdin is not None
            process.stdin.write(b"hello\n")
            assert recv_exactly(conn, 6) == b"hello\n"
            reset(conn)
            process.wait(TIMEOUT)
            assert process.stderr is not None
            stderr = process.stderr.read()
        finally:
            stop_process(process)
    lines = stderr_lines(stderr)
    assert process.returncode == 1, stderr
    assert len(lines) == 1, lines
    assert "reset" in lines[0]


def test_cli_stdio_exit_1_with_one_line_naming_the_address_when_refused() -> None:
    with socket.socket() as placeholder:
        # Bound, not listening: connects to it are refused, and no one else gets the port.
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        process = sockit_relay("-", f"tcp:127.0.0.1:{port}")
        try:
            _, stderr = process.communicate(b"", timeout=TIMEOUT)
        finally:
            stop_process(process)
    lines = stderr_lines(stderr)
    assert process.returncode == 1, stderr
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0]
    assert "refused" in lines[0].lower()


@pytest.mark.parametrize(
    ("src", "dst", "named"),
    [
        ("-", "tcp:127.0.0.1", "tcp:127.0.0.1"),
        ("bogus:1", "-", "bogus"),
        ("-", "tcp:127.0.0.1:80,idle-timout=1", "idle-timout"),
        ("udp-listen:0", "tcp:127.0.0.1:80", "udp-listen"),
    ],
)
def test_cli_exit_2_for_a_malformed_endpoint(src: str, dst: str, named: str) -> None:
    process = sockit_relay(src, dst, stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        stop_process(process)
    assert process.returncode == 2, stderr
    assert stdout == b""
    lines = stderr_lines(stderr)
    assert len(lines) == 1, lines
    assert named in lines[0]


def test_cli_exit_2_without_two_endpoints() -> None:
    process = sockit_relay("-", stdin=subprocess.DEVNULL)
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        stop_process(process)
    assert process.returncode == 2, stderr


def test_cli_help_shows_the_grammar() -> None:
    process = sockit_relay("--help", stdin=subprocess.DEVNULL)
    try:
        stdout, _ = process.communicate(timeout=TIMEOUT)
    finally:
        stop_process(process)
    assert process.returncode == 0
    for word in ("tcp-listen:", "udp:", "unix-listen:", "exec:", "sh:", "file:", "proxy-protocol"):
        assert word.encode() in stdout


@pytest.mark.parametrize("bind", [None, "127.0.0.2"])
def test_cli_stdio_to_udp_a_datagram_per_chunk(bind: str | None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        target = f"udp:127.0.0.1:{port},close-wait=1" + (f",bind={bind}" if bind else "")
        process = sockit_relay("-", target)
        try:
            assert process.stdin is not None
            assert process.stdout is not None
            stdout = process.stdout.fileno()
            peers = set()
            for word in (b"one\n", b"two\n", b"three\n"):
                process.stdin.write(word)
                datagram, peer = server.recvfrom(65536)
                assert datagram == word  # one datagram per chunk, whole
                peers.add(peer)
                server.sendto(word.upper(), peer)
                assert read_fd_exactly(stdout, len(word)) == word.upper()
            # UDP has no EOF: our stdin's end starts close-wait, during which a late
            # reply still arrives; then the relay ends by itself, successfully.
            process.stdin.close()
            server.sendto(b"late\n", peer)
            assert read_fd_until_eof(stdout) == b"late\n"
            process.wait(TIMEOUT)
        finally:
            stop_process(process)
    assert process.returncode == 0
    assert len(peers) == 1
    assert peer[0] == (bind or "127.0.0.1")


# --- options --------------------------------------------------------------------------------


@SPLICE
def test_idle_timeout_ends_an_idle_connection_with_eof(splice: bool) -> None:
    with tcp_server() as backend:
        port = backend.getsockname()[1]
        with RelayThread(
            "tcp-listen:127.0.0.1:0,idle-timeout=300ms", f"tcp:127.0.0.1:{port}", splice=splice
        ) as relay:
            with connect(relay.port) as client:
                conn, _ = accept(backend)
                with conn:
                    client.sendall(b"hi")
                    assert recv_exactly(conn, 2) == b"hi"
                    conn.sendall(b"yo")
                    assert recv_exactly(client, 2) == b"yo"
                    idle_since = time.monotonic()
                    # Both peers see EOF (a FIN, not a reset) once idle for 300 ms.
                    assert client.recv(1) == b""
                    elapsed = time.monotonic() - idle_since
                    assert conn.recv(1) == b""
            assert 0.25 <= elapsed < 5, elapsed
            relay.wait_until(lambda r: r.stats.active == 0, "the connection ended")
            assert relay.stats_relay.stats.failed == 0


@SPLICE
def test_idle_timeout_does_not_end_an_active_connection(splice: bool) -> None:
    with RelayThread(
        "tcp-listen:127.0.0.1:0,idle-timeout=300ms", "exec:cat", splice=splice
    ) as relay:
        with connect(relay.port) as client:
            started = time.monotonic()
            # Traffic every 50 ms for about 0.7 s: never idle for 300 ms.
            for number in range(14):
                round_trip(client, b"%02d" % number)
                time.sleep(0.05)  # the traffic pattern under test, not synchronisation
            assert time.monotonic() - started > 0.6
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b""
        relay.wait_until(lambda r: r.stats.clean == 1, "a clean end")


@SPLICE
def test_close_wait_ends_the_connection_after_the_first_eof(splice: bool) -> None:
    with tcp_server() as backend:
        port = backend.getsockname()[1]
        with RelayThread(
            "tcp-listen:127.0.0.1:0,close-wait=400ms", f"tcp:127.0.0.1:{port}", splice=splice
        ) as relay:
            with connect(relay.port) as client:
                conn, _ = accept(backend)
                with conn:
                    client.sendall(b"request")
                    client.shutdown(socket.SHUT_WR)
                    first_eof = time.monotonic()
                    assert recv_until_eof(conn) == b"request"
                    # During close-wait the other direction still flows ...
                    conn.sendall(b"reply")
                    assert recv_exactly(client, 5) == b"reply"
                    # ... and the connection ends S after the first EOF, though the
                    # backend never sent its own EOF.
                    assert client.recv(1) == b""
                    elapsed = time.monotonic() - first_eof
                    assert conn.recv(1) == b""
            assert 0.35 <= elapsed < 5, elapsed


def test_max_conns_refuses_at_once_and_serves_again() -> None:
    with RelayThread("tcp-listen:127.0.0.1:0,max-conns=2", "exec:cat") as relay:
        first = connect(relay.port)
        second = connect(relay.port)
        try:
            round_trip(first, b"1")
            round_trip(second, b"2")
            started = time.monotonic()
            connect_expecting_reset(relay.port)
            assert time.monotonic() - started < 2, "refused at once, not queued"
            assert relay.stats_relay.stats.refused == 1
            first.shutdown(socket.SHUT_WR)
            assert recv_until_eof(first) == b""
            relay.wait_until(lambda r: r.stats.active == 1, "one connection left")
            with connect(relay.port) as fourth:
                round_trip(fourth, b"4")
            round_trip(second, b"still")
        finally:
            first.close()
            second.close()


def test_max_conns_holds_for_a_burst_of_connections() -> None:
    # Connections that arrive together are accepted in one batch: the limit must count
    # each accepted one at once, not when its task first runs.
    with RelayThread("tcp-listen:127.0.0.1:0,max-conns=2", "exec:cat") as relay:
        clients: list[socket.socket] = []
        try:
            for _ in range(6):
                with contextlib.suppress(ConnectionResetError):  # refused at once
                    clients.append(connect(relay.port))
            served = 0
            for number, client in enumerate(clients):
                try:
                    client.sendall(b"%d" % number)
                    reply = client.recv(16)
                except ConnectionResetError:
                    continue
                if reply == b"%d" % number:
                    served += 1
            assert served == 2
            assert relay.stats_relay.stats.refused == 4
        finally:
            for client in clients:
                client.close()


def test_bind_sets_the_source_address_of_the_outgoing_connection() -> None:
    with tcp_server() as backend:
        port = backend.getsockname()[1]
        with (
            RelayThread("tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{port},bind=127.0.0.2") as relay,
            connect(relay.port) as client,
        ):
            conn, peer = accept(backend)
            with conn:
                assert peer[0] == "127.0.0.2"
                client.sendall(b"x")
                assert recv_exactly(conn, 1) == b"x"


def _fill_accept_queue(listener: socket.socket, clients: list[socket.socket]) -> None:
    """Queue connections nobody accepts until the next SYN is dropped (Linux drops a
    SYN when the accept queue is full, so the connect hangs: a black hole on loopback)."""
    address = listener.getsockname()
    for _ in range(64):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        clients.append(client)
        client.setblocking(False)
        client.connect_ex(address)
        _, writable, _ = select.select([], [client], [], 0.2)
        if not writable:
            return
    pytest.fail("could not fill the accept queue")


def test_connect_timeout_gives_up_and_resets_the_client() -> None:
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    queued: list[socket.socket] = []
    try:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(0)
        _fill_accept_queue(black_hole, queued)
        port = black_hole.getsockname()[1]
        with RelayThread(
            "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{port},connect-timeout=300ms"
        ) as relay:
            for _ in range(2):  # the relay keeps serving after a timeout
                started = time.monotonic()
                connect_expecting_reset(relay.port)
                elapsed = time.monotonic() - started
                assert 0.25 <= elapsed < 3, elapsed
            relay.wait_until(lambda r: r.stats.failed == 2, "two failed connections")
    finally:
        for client in queued:
            client.close()
        black_hole.close()


def test_refused_destination_resets_the_client_and_keeps_serving() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        with RelayThread("tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{port}") as relay:
            for _ in range(2):
                connect_expecting_reset(relay.port)
            relay.wait_until(lambda r: r.stats.failed == 2, "two failed connections")


# --- trace, -v and JSON logs ---------------------------------------------------------------

LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")


class CliListener:
    """``sockit relay ... tcp-listen:127.0.0.1:0 -``: one connection relayed to our pipes."""

    def __init__(self, *options: str) -> None:
        self.process = sockit_relay(*options, "tcp-listen:127.0.0.1:0", "-")
        self.stderr = b""

    def wait_port(self) -> int:
        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        deadline = time.monotonic() + TIMEOUT
        while (match := LISTENING.search(self.stderr)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no 'Listening on' line: {self.stderr!r}"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                assert chunk, f"the relay exited: {self.stderr!r}"
                self.stderr += chunk
        return int(match.group(1))

    def exchange(self) -> tuple[int, int]:
        """ping -> stdout, pong <- stdin, both with EOF; the exit code and client port."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        with connect(self.wait_port()) as client:
            client_port = client.getsockname()[1]
            client.sendall(b"ping\n")
            client.shutdown(socket.SHUT_WR)
            assert read_fd_until_eof(self.process.stdout.fileno()) == b"ping\n"
            self.process.stdin.write(b"pong\n")
            self.process.stdin.close()
            assert recv_until_eof(client) == b"pong\n"
        returncode = self.process.wait(TIMEOUT)
        self.stderr += self.process.stderr.read()
        return returncode, client_port


@contextlib.contextmanager
def cli_listener(*options: str) -> Iterator[CliListener]:
    listener = CliListener(*options)
    try:
        yield listener
    finally:
        stop_process(listener.process)


def test_cli_trace_shows_each_socket_operation() -> None:
    with cli_listener("--trace") as cli:
        returncode, client_port = cli.exchange()
    text = cli.stderr.decode()
    assert returncode == 0, text
    assert f"accept 127.0.0.1:{client_port}" in text
    assert "EOF from" in text
    assert "shutdown(SHUT_WR)" in text
    assert "close of" in text
    # Every trace line says it is one.
    trace = [line for line in text.splitlines() if "trace:" in line]
    assert len(trace) >= 5, text


def test_cli_verbose_gives_one_summary_line_with_byte_counts() -> None:
    with cli_listener("-v") as cli:
        returncode, client_port = cli.exchange()
    text = cli.stderr.decode()
    assert returncode == 0, text
    # One line per connection (its 4-tuple, "<->", its peer); a total may follow.
    summaries = [line for line in text.splitlines() if "<->" in line]
    assert len(summaries) == 1, text
    assert f"127.0.0.1:{client_port}" in summaries[0]
    assert "5 bytes sent, 5 bytes received" in summaries[0]
    assert "trace" not in text


def test_cli_json_log_format_is_one_object_per_line() -> None:
    with cli_listener("-v", "--trace", "--log-format", "json") as cli:
        returncode, client_port = cli.exchange()
    lines = stderr_lines(cli.stderr)
    assert returncode == 0, lines
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON object: {line!r}")
    assert all(isinstance(event, dict) for event in events)
    done = [event for event in events if event.get("event") == "relay_done"]
    assert len(done) == 1, events
    assert (done[0]["bytes_a_to_b"], done[0]["bytes_b_to_a"]) == (5, 5)
    assert done[0]["outcome"] == "eof"
    assert any(f"127.0.0.1:{client_port}" in json.dumps(event) for event in events)
