"""Exec per connection: run a program whose stdin and stdout are the connection.

``exec_handler(["sha256sum"])`` is a handler for :func:`sockit.serve.serve` that runs
the program once per connection, like inetd or ``ncat --exec``. What the child gets:

* **argv exec, no shell**: the program is run directly (``$PATH`` searched); only
  :func:`sh_exec_handler` goes through ``/bin/sh -c``.
* **stdin is the socket itself** (a dup of it, made blocking, as inetd does): what the
  client sends goes straight to the child with no copy in between, and the client's
  half-close is the child's EOF. Bytes the server had already read into the stream's
  buffer (a PROXY protocol header's leftovers) cannot be pushed back into the socket,
  so in that case stdin is a pipe fed by this process instead, with the same EOF.
* **stdout is a pipe** this process copies to the socket. When every writer of the
  pipe has closed it (the child exited, or closed its stdout and went on reading), the
  socket is half-closed (``shutdown(SHUT_WR)``): the client sees EOF after the last
  byte while its own direction keeps flowing. Half-close thus works both ways.
* **stderr** is the server's stderr.
* **only fds 0, 1 and 2** (``close_fds=True``; sockets adopted from systemd are
  inheritable, so they must be closed explicitly).
* **default signal dispositions and an empty signal mask**: ``restore_signals=True``
  undoes Python's ``SIG_IGN`` for ``SIGPIPE``/``SIGXFSZ``, ``execve`` resets caught
  signals by itself, and signals this process inherited as ignored (``nohup`` ignores
  ``SIGHUP``, a shell's ``&`` ignores ``SIGINT``/``SIGQUIT``) or blocked are reset in
  the child by a ``preexec_fn``, used only when there is such a signal (``preexec_fn``
  costs the fast ``vfork`` path).
* **the connection in its environment**: ``SOCKIT_REMOTE_ADDR``, ``SOCKIT_REMOTE_PORT``,
  ``SOCKIT_LOCAL_ADDR``, ``SOCKIT_LOCAL_PORT``, ``SOCKIT_PROTO`` (``TCP``, ``UDP`` or
  ``UNIX``), and the same under ncat's ``NCAT_`` names.

The child is always reaped. If the server aborts the connection (the stream is closed
under the handler during shutdown) or the handler is interrupted, the child gets
``SIGTERM`` and, if it is still there after a grace period, ``SIGKILL``. A handler
running in its process's main thread (sequential mode, fork mode's connection process)
also gives the child ``PR_SET_PDEATHSIG``: a connection process that leaves with
``os._exit`` on shutdown takes its child with it.

:class:`AsyncExecHandler` (``async_exec_handler``/``async_sh_exec_handler``) is the twin
for the async mode: the same child, but the event loop owns the socket, so stdin is a
pipe fed from the stream. The stream's idle timeout does not apply to exec in either
form: the exchange lasts as long as the child.

This module must never run a shell unless asked (:func:`sh_exec_handler`), leave a
child unreaped, or write to a file descriptor number it does not own: it works on its
own dup of the socket, so a socket closed and its number reused under it cannot
receive another connection's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Protocol

from sockit.errors import BrokenResourceError, ClosedResourceError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sockit.addr import SocketAddress
    from sockit.aio import AsyncSocketStream
    from sockit.sync import SocketStream

__all__ = [
    "DEFAULT_KILL_GRACE",
    "AsyncExecHandler",
    "ExecHandler",
    "async_exec_handler",
    "async_sh_exec_handler",
    "child_preexec",
    "connection_environment",
    "death_signal_setter",
    "exec_handler",
    "sh_exec_handler",
]

DEFAULT_KILL_GRACE = 2.0
"""Seconds between ``SIGTERM`` and ``SIGKILL`` for a child whose connection is aborted
(systemd's ``TimeoutStopSec`` is 90 s for whole services; a per-connection child that
ignores ``SIGTERM`` gets far less)."""

_logger = logging.getLogger("sockit.serve")

# Bytes moved per read of the child's output or of client input (pumped stdin). 256 KiB:
# the child's pipe holds 64 KiB by default (pipe(7)), so one read empties it.
_CHUNK = 256 * 1024
# How often a handler waiting on its child checks whether the server closed the stream
# under it (shutdown aborting the connection). The stream offers no event for that, so
# this bounds the delay between the abort and the child's SIGTERM.
_ABORT_CHECK_SECONDS = 0.25
# After the child is done, wait this long at most for the client's EOF before the
# server closes: closing with unread input sends an RST, which can destroy the child's
# last output before the client read it (Apache's "lingering close" waits 2 s too).
_LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 1 << 20

_SHELL = "/bin/sh"
# Signals restore_signals=True already resets to SIG_DFL in the child (CPython's
# _Py_RestoreSignals), so they need no preexec_fn.
_RESTORED_BY_SUBPROCESS = frozenset(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, name)
)
_UNCATCHABLE = frozenset({signal.SIGKILL, signal.SIGSTOP})
# prctl(2): "set the parent-death signal of the calling process".
_PR_SET_PDEATHSIG = 1

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def connection_environment(
    local: SocketAddress | None, remote: SocketAddress | None, protocol: str
) -> dict[str, str]:
    """The variables that describe a connection to a child, under both name sets.

    ``protocol`` is ``"TCP"``, ``"UDP"`` or ``"UNIX"``. For IP addresses ``*_ADDR`` is
    the address without brackets (``::1``) and ``*_PORT`` the port; for UNIX sockets
    ``*_ADDR`` is the path (``@name`` for abstract, empty for an unnamed peer) and no
    ``*_PORT`` is set. An unknown address (``None``) is left out.
    """
    values: dict[str, str] = {"PROTO": protocol}
    for side, address in (("LOCAL", local), ("REMOTE", remote)):
        if address is None:
            continue
        if address.is_unix:
            values[f"{side}_ADDR"] = address.path or ""
        else:
            values[f"{side}_ADDR"] = address.host
            values[f"{side}_PORT"] = str(address.port)
    environment: dict[str, str] = {}
    for prefix in ("SOCKIT_", "NCAT_"):
        for name, value in values.items():
            environment[prefix + name] = value
    return environment


_CONNECTION_VARIABLES = tuple(
    prefix + name
    for prefix in ("SOCKIT_", "NCAT_")
    for name in ("PROTO", "LOCAL_ADDR", "LOCAL_PORT", "REMOTE_ADDR", "REMOTE_PORT")
)


def _protocol_of(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        return "UNIX"
    return "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"


class ExecHandler:
    """A stream handler that runs ``argv`` per connection; see the module docstring.

    Call it with a connected :class:`~sockit.SocketStream` (it needs the socket's file
    descriptor). It returns when the child has exited and its output has been sent and
    followed by EOF; the server then closes the stream. It never raises for what the
    child or the client does (a missing program is logged and ends the connection);
    it re-raises what interrupts it (``KeyboardInterrupt``) after killing the child.
    """

    __slots__ = ("argv", "cwd", "env", "kill_grace")

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        if isinstance(argv, str | bytes):
            raise TypeError("argv must be a sequence of arguments, not a string")
        self.argv: tuple[str, ...] = tuple(argv)
        if not self.argv or not self.argv[0]:
            raise ValueError("argv needs at least a program name")
        if kill_grace < 0:
            raise ValueError(f"kill_grace must be >= 0, not {kill_grace!r}")
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.kill_grace = kill_grace

    def __repr__(self) -> str:
        return f"ExecHandler({list(self.argv)!r})"

    def __call__(self, stream: SocketStream) -> None:
        """Serve one connection: run the program with it as stdin and stdout."""
        _Session(self, stream).run()

    def environment(self, stream: _Connected) -> dict[str, str]:
        """The child's environment: ours, then ``env=``, then the connection's."""
        environment = dict(os.environ)
        for name in _CONNECTION_VARIABLES:
            environment.pop(name, None)
        if self.env is not None:
            environment.update(self.env)
        local: SocketAddress | None
        remote: SocketAddress | None
        try:
            local = stream.local_address
        except OSError:
            local = None
        try:
            remote = stream.remote_address
        except OSError:
            remote = None
        environment.update(connection_environment(local, remote, _protocol_of(stream.socket)))
        return environment


def exec_handler(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> ExecHandler:
    """A handler that runs ``argv`` (no shell) per connection; see :class:`ExecHandler`.

    ``env`` adds to (or overrides) the server's environment; ``cwd`` is the child's
    working directory; ``kill_grace`` the seconds between ``SIGTERM`` and ``SIGKILL``
    when a connection is aborted.
    """
    return ExecHandler(argv, env=env, cwd=cwd, kill_grace=kill_grace)


def sh_exec_handler(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> ExecHandler:
    """A handler that runs ``/bin/sh -c command`` per connection (``ncat --sh-exec``).

    The command is shell text: quote what comes from outside. The connection's
    variables are in the environment, so ``'echo "$SOCKIT_REMOTE_ADDR"'`` works.
    """
    if not isinstance(command, str):
        raise TypeError(f"command must be a str, not {type(command).__name__}")
    return ExecHandler([_SHELL, "-c", command], env=env, cwd=cwd, kill_grace=kill_grace)


def _signals_to_reset() -> tuple[list[signal.Signals], bool]:
    """Signals ignored here that ``restore_signals`` leaves ignored, and whether this
    thread blocks any signal (a child would inherit both)."""
    ignored = []
    for number in signal.valid_signals():
        if number in _UNCATCHABLE or number in _RESTORED_BY_SUBPROCESS:
            continue
        try:
            if signal.getsignal(number) == signal.SIG_IGN:
                ignored.append(signal.Signals(number))
        except (ValueError, OSError):
            continue
    blocked = bool(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    return ignored, blocked


def child_preexec(*, die_with_parent: bool) -> Callable[[], None] | None:
    """The child's set-up between fork and exec, or ``None`` when there is nothing to
    do (then subprocess keeps its fast vfork path)."""
    ignored, blocked = _signals_to_reset()
    set_death_signal = death_signal_setter() if die_with_parent else None
    if not ignored and not blocked and set_death_signal is None:
        return None
    parent = os.getpid()

    def prepare_child() -> None:  # runs in the child between fork and exec
        for number in ignored:
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if set_death_signal is not None:
            set_death_signal()
            if os.getppid() != parent:  # the parent died before the line above
                os.kill(os.getpid(), signal.SIGTERM)

    return prepare_child


def death_signal_setter() -> Callable[[], None] | None:
    """A function that makes the calling process get SIGTERM when its parent thread
    ends (Linux ``prctl(PR_SET_PDEATHSIG)``), or ``None`` where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # noqa: PLC0415 (only fork and sequential mode need it)

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    death_signal = int(signal.SIGTERM)

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)

    return set_death_signal


class _Connected(Protocol):
    """What a session needs of a stream: the sync and async socket streams both fit."""

    @property
    def local_address(self) -> SocketAddress: ...

    @property
    def remote_address(self) -> SocketAddress: ...

    @property
    def socket(self) -> socket.socket: ...


class _Child:
    """One connection's child process: spawned, watched (pidfd), reaped, logged."""

    def __init__(self, handler: ExecHandler, stream: _Connected) -> None:
        self.handler = handler
        self.stream = stream
        self.process: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.exited = False

    def spawn(self, stdin: int) -> bool:
        """Start the program; False (and one log line) if it cannot be started."""
        handler = self.handler
        environment = handler.environment(self.stream)
        try:
            # No shell: argv is executed directly (S603 flags any subprocess call).
            self.process = subprocess.Popen(  # noqa: S603
                handler.argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=None,
                close_fds=True,
                restore_signals=True,
                # Only when needed (see child_preexec): it costs the vfork fast path.
                preexec_fn=child_preexec(die_with_parent=_in_main_thread()),  # noqa: PLW1509
                env=environment,
                cwd=handler.cwd,
                bufsize=0,
            )
        except OSError as error:
            _logger.error(  # noqa: TRY400 (one line per connection, not a traceback)
                "exec %s failed for %s: %s",
                handler.argv[0],
                _peer(self.stream),
                error.strerror or error,
                extra={"event": "exec_failed", "program": handler.argv[0]},
            )
            return False
        _logger.debug(
            "exec %s: pid %d for %s",
            handler.argv[0],
            self.process.pid,
            _peer(self.stream),
            extra={"event": "exec_started", "pid": self.process.pid},
        )
        try:
            self.pidfd = os.pidfd_open(self.process.pid)
        except (AttributeError, OSError):
            self.pidfd = -1  # no pidfd (old kernel, not Linux): exits are polled
        return True

    @property
    def stdin_fd(self) -> int:
        process = self.process
        return -1 if process is None or process.stdin is None else process.stdin.fileno()

    @property
    def stdout_fd(self) -> int:
        process = self.process
        return -1 if process is None or process.stdout is None else process.stdout.fileno()

    def close_stdin(self) -> None:
        process = self.process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def close_stdout(self) -> None:
        process = self.process
        if process is not None and process.stdout is not None:
            with contextlib.suppress(OSError):
                process.stdout.close()

    def exited_now(self) -> bool:
        """Reap the child if it has exited; True once it has."""
        if self.exited:
            return True
        process = self.process
        if process is None or process.poll() is None:
            return False
        self.exited = True
        _logger.debug(
            "exec %s: pid %d exited with status %d",
            self.handler.argv[0],
            process.pid,
            process.returncode,
            extra={"event": "exec_exited", "pid": process.pid, "status": process.returncode},
        )
        return True

    def terminate(self) -> bool:
        """Send SIGTERM unless the child is gone; True if it was sent."""
        process = self.process
        if process is None or self.exited_now():
            return False
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        return True

    def kill_and_reap(self) -> None:
        """SIGKILL (the child has had its grace period) and wait for it."""
        process = self.process
        if process is None or self.exited_now():
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        self.exited_now()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; reap either way (blocking)."""
        if self.terminate() and not self.wait_exit(self.handler.kill_grace):
            self.kill_and_reap()

    def wait_exit(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the child to exit (blocking); True if it did."""
        process = self.process
        if process is None:
            return True
        if self.pidfd >= 0:
            poller = select.poll()
            poller.register(self.pidfd, _POLLIN)
            poller.poll(_milliseconds(seconds))
            return self.exited_now()
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return self.exited_now()

    def close(self) -> None:
        """Release the pipes and the pidfd (the child must have been reaped)."""
        self.close_stdin()
        self.close_stdout()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


class _Session:
    """One connection served by a blocking :class:`ExecHandler`."""

    def __init__(self, handler: ExecHandler, stream: SocketStream) -> None:
        self.stream = stream
        self.child = _Child(handler, stream)

    def run(self) -> None:
        stream = self.stream
        child = self.child
        original_timeout = stream.socket.gettimeout()
        # Bytes the stream received but did not hand out yet (read past a PROXY
        # header): they are not in the socket any more, so the child gets them first.
        prefix = stream.take_buffered()
        # Our own descriptor for the socket: the server may close the stream's fd from
        # another thread (abort on shutdown), and that number may then be reused.
        sock = stream.socket.dup()
        try:
            # A socket's O_NONBLOCK flag belongs to the open file, shared with the
            # child's stdin: the child expects a blocking stdin. All our own I/O on the
            # socket uses MSG_DONTWAIT instead.
            sock.settimeout(None)
            if not child.spawn(subprocess.PIPE if prefix else sock.fileno()):
                return
            pump = _Pump(self, sock, prefix)
            try:
                if pump.run():
                    _linger(sock, stream)
                    return
            except BaseException:
                child.stop()
                raise
            # The server closed the stream under us: the connection is being aborted.
            child.stop()
        finally:
            child.close()
            if not stream.closed:
                with contextlib.suppress(OSError):
                    sock.settimeout(original_timeout)
            sock.close()


class AsyncExecHandler:
    """The async twin of :class:`ExecHandler`, for ``serve(..., mode="async")``.

    The same child (argv or ``/bin/sh -c``, default signals, fds 0/1/2, the
    connection's environment), with one difference: the event loop's transport reads
    the socket, so the child's stdin is a pipe this handler feeds from the stream
    (``recv`` in, ``os.write`` out, waiting while the pipe is full), and closes at the
    client's EOF. Half-close works both ways as in the blocking form. If the handler is
    cancelled or the stream is closed under it (server abort), the child gets
    ``SIGTERM``, then ``SIGKILL`` after the grace period, and is reaped. The stream's
    idle timeout does not apply to the exchange with the child.
    """

    __slots__ = ("spec",)

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.spec = ExecHandler(argv, env=env, cwd=cwd, kill_grace=kill_grace)

    @property
    def argv(self) -> tuple[str, ...]:
        """The program and its arguments."""
        return self.spec.argv

    def __repr__(self) -> str:
        return f"AsyncExecHandler({list(self.spec.argv)!r})"

    async def __call__(self, stream: AsyncSocketStream) -> None:
        """Serve one connection: run the program, pump both ways, reap it."""
        await _AsyncSession(self.spec, stream).run()


def async_exec_handler(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> AsyncExecHandler:
    """The async form of :func:`exec_handler`; see :class:`AsyncExecHandler`."""
    return AsyncExecHandler(argv, env=env, cwd=cwd, kill_grace=kill_grace)


def async_sh_exec_handler(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> AsyncExecHandler:
    """The async form of :func:`sh_exec_handler` (``/bin/sh -c command``)."""
    if not isinstance(command, str):
        raise TypeError(f"command must be a str, not {type(command).__name__}")
    return AsyncExecHandler([_SHELL, "-c", command], env=env, cwd=cwd, kill_grace=kill_grace)


class _Aborted(Exception):
    """The stream was closed under the handler (the server aborts the connection)."""


class _AsyncSession:
    """One connection served by an :class:`AsyncExecHandler`."""

    def __init__(self, handler: ExecHandler, stream: AsyncSocketStream) -> None:
        self.stream = stream
        self.child = _Child(handler, stream)
        self.loop = asyncio.get_running_loop()

    async def run(self) -> None:
        child = self.child
        if not child.spawn(subprocess.PIPE):
            return
        tasks: set[asyncio.Future[None]] = set()
        try:
            os.set_blocking(child.stdin_fd, False)
            os.set_blocking(child.stdout_fd, False)
            feeding = asyncio.ensure_future(self._feed_stdin())
            sending = asyncio.ensure_future(self._send_stdout_until_exit())
            tasks = {feeding, sending}
            pending = set(tasks)
            # Bounded by the child: sending ends when its output ended and it exited.
            while sending in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # _Aborted (stream closed under us) ends the session
            for task in pending:
                # Let it finish cancelling: its receive must end before ours begins.
                await _finish_cancelled(task)
            await self._linger()
        except _Aborted:
            await self._stop()
        except BaseException:
            await self._stop()
            raise
        finally:
            try:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    # Cleanup must finish (or fds leak); the error or cancellation that
                    # brought us here is already on its way up.
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await task
            finally:
                child.close()

    async def _send_stdout_until_exit(self) -> None:
        await self._send_stdout()
        await self._wait_exit(None)

    # --- client -> child ---------------------------------------------------------------

    async def _feed_stdin(self) -> None:
        """Copy the client's bytes to the child's stdin; close it at the client's EOF."""
        stream = self.stream
        fd = self.child.stdin_fd
        try:
            while True:
                data = await stream.recv(_CHUNK, timeout=math.inf)
                if not data:
                    return
                if not await self._write_all(fd, memoryview(data)):
                    return  # the child closed its stdin; the rest has no reader
        except ClosedResourceError as error:
            raise _Aborted from error
        except (BrokenResourceError, ConnectionError):
            return  # a reset ends the child's input like an EOF does
        finally:
            self.child.close_stdin()

    async def _write_all(self, fd: int, data: memoryview) -> bool:
        while data:
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                await self._ready(fd, writable=True)
                continue
            except BrokenPipeError:
                return False
            data = data[written:]
        return True

    # --- child -> client ---------------------------------------------------------------

    async def _send_stdout(self) -> None:
        """Copy the child's output to the client; EOF when every writer closed it."""
        stream = self.stream
        fd = self.child.stdout_fd
        while True:
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                await self._ready(fd, writable=False)
                continue
            try:
                if not data:
                    await stream.send_eof()
                    return
                await stream.sendall(data, timeout=math.inf)
            except ClosedResourceError as error:
                raise _Aborted from error
            except (BrokenResourceError, ConnectionError):
                # The client is gone: its next write gets EPIPE/SIGPIPE.
                self.child.close_stdout()
                return

    # --- waiting and stopping ----------------------------------------------------------

    async def _ready(self, fd: int, *, writable: bool) -> None:
        loop = self.loop
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        if writable:
            loop.add_writer(fd, wake)
        else:
            loop.add_reader(fd, wake)
        try:
            await future
        finally:
            if writable:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    async def _wait_exit(self, seconds: float | None) -> bool:
        """Wait (up to ``seconds``) for the child to exit; True if it did."""
        child = self.child
        deadline = None if seconds is None else time.monotonic() + seconds
        while not child.exited_now():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if child.pidfd >= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready(child.pidfd, writable=False), remaining)
            else:
                # No pidfd: no event for a child's exit; look again shortly (bounded).
                await asyncio.sleep(min(_ABORT_CHECK_SECONDS, remaining or _ABORT_CHECK_SECONDS))
        return True

    async def _stop(self) -> None:
        """SIGTERM, SIGKILL after the grace period, reap; survives a second cancel."""
        child = self.child
        if not child.terminate():
            return
        try:
            exited = await self._wait_exit(child.handler.kill_grace)
        except asyncio.CancelledError:
            exited = False
        if not exited:
            child.kill_and_reap()

    async def _linger(self) -> None:
        """Discard client input until its EOF, at most _LINGER_SECONDS (see there)."""
        deadline = time.monotonic() + _LINGER_SECONDS
        received = 0
        with contextlib.suppress(TimeoutError, OSError):
            while received <= _LINGER_MAX_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                data = await self.stream.recv(_CHUNK, timeout=remaining)
                if not data:
                    return
                received += len(data)


async def _finish_cancelled(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` and wait for it to end; re-raise only our own cancellation."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:  # noqa: BLE001, S110 (its error was already acted on, or is moot)
        pass


class _Pump:
    """Copies child stdout -> socket (and socket -> child stdin when stdin is a pipe)
    with one poll loop and non-blocking calls, checking for an abort in between."""

    def __init__(self, session: _Session, sock: socket.socket, prefix: bytes) -> None:
        self.session = session
        self.child = session.child
        self.sock = sock
        # Child output read but not yet sent, and client input not yet written.
        self.outgoing = memoryview(b"")
        self.incoming = memoryview(prefix)
        self.client_eof = False
        self.output_done = False
        self.out_fd = self.child.stdout_fd
        os.set_blocking(self.out_fd, False)
        self.in_fd = self.child.stdin_fd
        if self.in_fd >= 0:
            os.set_blocking(self.in_fd, False)
            self._write_incoming()

    def run(self) -> bool:
        """Pump until the child exited and its output is sent; False if aborted."""
        stream = self.session.stream
        child = self.child
        sock_fd = self.sock.fileno()
        while True:
            exited = child.exited_now()
            if exited and self.output_done:
                return True
            if stream.closed:
                return False
            poller = select.poll()
            sock_events = 0
            if not self.output_done:
                if self.outgoing:
                    sock_events |= _POLLOUT
                else:
                    poller.register(self.out_fd, _POLLIN)
            if self.in_fd >= 0:
                if self.incoming:
                    poller.register(self.in_fd, _POLLOUT)
                elif not self.client_eof:
                    sock_events |= _POLLIN
            if sock_events:
                poller.register(sock_fd, sock_events)
            if child.pidfd >= 0 and not exited:
                poller.register(child.pidfd, _POLLIN)
            ready = dict(poller.poll(_milliseconds(_ABORT_CHECK_SECONDS)))
            if not ready:
                continue
            if self.out_fd >= 0 and self.out_fd in ready:
                self._read_output()
            if sock_fd in ready:
                # An error or hang-up is reported whatever was asked for; the call that
                # was waiting finds out which, so both are tried.
                if sock_events & _POLLOUT:
                    self._send_output()
                if sock_events & _POLLIN:
                    self._read_input()
            if self.in_fd >= 0 and self.in_fd in ready:
                self._write_incoming()

    # --- child -> client ---------------------------------------------------------------

    def _read_output(self) -> None:
        try:
            data = os.read(self.out_fd, _CHUNK)
        except BlockingIOError:
            return
        if data:
            self.outgoing = memoryview(data)
            self._send_output()
            return
        # Every writer closed the pipe: the child is done writing. Tell the client.
        self._finish_output()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _send_output(self) -> None:
        while self.outgoing:
            try:
                sent = self.sock.send(self.outgoing, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                # The client is gone (reset, EPIPE): stop reading the child's output.
                # Its next write gets EPIPE/SIGPIPE, the default way a pipeline ends.
                self._finish_output()
                return
            self.outgoing = self.outgoing[sent:]

    def _finish_output(self) -> None:
        self.output_done = True
        self.outgoing = memoryview(b"")
        self.child.close_stdout()
        self.out_fd = -1

    # --- client -> child (only when stdin is a pipe) ------------------------------------

    def _read_input(self) -> None:
        try:
            data = self.sock.recv(_CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # a reset ends the child's input like an EOF does
        if not data:
            self.client_eof = True
            if not self.incoming:
                self._close_stdin()
            return
        self.incoming = memoryview(data)
        self._write_incoming()

    def _write_incoming(self) -> None:
        while self.incoming and self.in_fd >= 0:
            try:
                written = os.write(self.in_fd, self.incoming)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno != errno.EPIPE:
                    raise
                # The child closed its stdin: the rest of the input has no reader.
                self.incoming = memoryview(b"")
                self._close_stdin()
                return
            self.incoming = self.incoming[written:]
        if self.client_eof and not self.incoming:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.in_fd < 0:
            return
        self.child.close_stdin()
        self.in_fd = -1
        self.client_eof = True


def _linger(sock: socket.socket, stream: SocketStream) -> None:
    """Discard client input until its EOF, at most _LINGER_SECONDS (see there)."""
    deadline = time.monotonic() + _LINGER_SECONDS
    received = 0
    poller = select.poll()
    poller.register(sock.fileno(), _POLLIN)
    while received <= _LINGER_MAX_BYTES and not stream.closed:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if not poller.poll(_milliseconds(min(remaining, _ABORT_CHECK_SECONDS))):
            continue
        try:
            data = sock.recv(_CHUNK, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not data:
            return
        received += len(data)


def _in_main_thread() -> bool:
    """Whether the handler runs in its process's main thread: sequential mode, or the
    child process of fork mode, which on a shutdown SIGTERM leaves with ``os._exit``
    (no ``finally`` runs there). A child spawned from there gets SIGTERM when that
    process ends (``PR_SET_PDEATHSIG``), so it cannot outlive its connection's server.
    A handler thread (thread mode) kills its child itself, and the death signal,
    which follows the spawning *thread*, would not fit there."""
    return threading.current_thread() is threading.main_thread()


def _milliseconds(seconds: float) -> int:
    # Round up so a remainder below 1 ms does not turn into a busy 0 ms poll.
    return max(0, int(seconds * 1000 + 0.999))


def _peer(stream: _Connected) -> str:
    try:
        return str(stream.remote_address)
    except OSError:
        return "(unknown peer)"
