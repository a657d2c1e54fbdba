"""Opening the relay's endpoints as legs: connect, spawn, open, and read a PROXY header.

:func:`open_leg` turns a non-listening :class:`~sockit.relay.grammar.EndpointSpec` into
a :class:`~sockit.relay.pump.Leg` the pump can drive:

* ``tcp:``/``unix:``: a Happy Eyeballs (or UNIX) connect; with ``proxy-protocol=`` the
  PROXY header naming the original client (the other leg's peer) is sent first.
* ``udp:``/``unix-dgram:``: a connected datagram socket (a ``unix-dgram`` client is
  autobound to an abstract name so replies can reach it).
* ``stdio``: this process's stdin and stdout, reopened (``/proc/self/fd``) as new
  non-blocking file descriptions, so the shell's terminal or pipe never turns
  non-blocking under it; sending EOF releases stdout so its reader sees EOF at once.
* ``exec:``/``sh:``: a child with pipes for stdin and stdout, the serve issue's
  hygiene (default signal dispositions, only fds 0-2, ``SOCKIT_*``/``NCAT_*`` variables
  with the 4-tuple), half-close both ways (our EOF closes its stdin; its closed stdout
  is our EOF). The child is reaped; an aborted connection sends it ``SIGTERM``, and
  one that has not exited ``kill_grace`` after its pipes closed gets ``SIGTERM`` then
  ``SIGKILL``.
* ``file:``: read (the first endpoint: its bytes, then EOF; what arrives is dropped)
  or written (the second endpoint: created or truncated, ``append`` to append;
  nothing is ever read from it, so the other side sees EOF at once).

This module must never block the event loop (connects, header reads and child reaping
are awaited), never run a shell unless ``sh:`` asked, and never leave a child unreaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import stat
import subprocess
import sys
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress
from sockit.aio._wait import wait_ready
from sockit.aio.connect import connect_socket, connect_unix_socket
from sockit.errors import EndOfStream, IncompleteRead, ProxyProtocolError
from sockit.proto.proxy import encode_proxy_v1, encode_proxy_v2, parse_proxy_header
from sockit.relay.pump import Leg, SocketLeg
from sockit.serve.exec import DEFAULT_KILL_GRACE, child_preexec, connection_environment

if TYPE_CHECKING:
    from sockit.proto.proxy import ProxyHeader
    from sockit.relay.grammar import EndpointSpec

__all__ = [
    "ChildLeg",
    "FileLeg",
    "StdioLeg",
    "fail_reason",
    "open_leg",
    "read_proxy_header",
    "send_proxy_header",
    "spawn_child",
]

DEFAULT_PROXY_HEADER_TIMEOUT = 5.0
"""Seconds a listening endpoint with ``proxy-protocol=`` waits for the header (HAProxy
sends it with the connection; a peer that sends nothing is not a proxy)."""


_PEEK_SIZE = 16 + 65535  # the largest v2 header (v1 lines are at most 107 bytes)
_PEEK_RETRY = 0.01


class StdioLeg(Leg):
    """This process's stdin (read) and stdout (write), on private file descriptions."""

    def __init__(self) -> None:
        super().__init__(_private_fd(0, os.O_RDONLY), _private_fd(1, os.O_WRONLY), "stdio")

    def send_eof(self) -> None:
        """Close our stdout: its reader sees EOF now, not when this process exits."""
        if self.write_fd < 0:
            return
        fd, self.write_fd = self.write_fd, -1
        os.close(fd)
        # fd 1 itself also holds the pipe open; point it at /dev/null (fd 1 stays valid
        # for anything that prints later).
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(null, 1)
            os.close(null)


def _private_fd(fd: int, flags: int) -> int:
    """A non-blocking fd for what ``fd`` refers to, without changing ``fd``'s own flags.

    Pipes, FIFOs and terminals are reopened through ``/proc/self/fd`` (a new open file
    description, so ``O_NONBLOCK`` stays ours); a socket (inetd) or anything else is
    duplicated (sockets are non-blocking per call anyway: only this process uses
    them). Regular files are duplicated and never polled.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return -1  # closed (e.g. <&-): nothing to read, nowhere to write
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        with contextlib.suppress(OSError):
            return os.open(f"/proc/self/fd/{fd}", flags | os.O_NONBLOCK | os.O_CLOEXEC)
    duplicate = os.dup(fd)
    if stat.S_ISSOCK(mode):
        os.set_blocking(duplicate, False)
    return duplicate


class FileLeg(Leg):
    """A regular file (or device) read to its end, or written."""

    def __init__(self, path: str, *, write: bool, append: bool = False) -> None:
        if write:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            fd = os.open(path, flags | os.O_CLOEXEC, 0o666)
            super().__init__(-1, fd, f"file:{path}")
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            super().__init__(fd, -1, f"file:{path}")
        # A FIFO or character device may be polled; make it non-blocking like stdio.
        if self.read_pollable if not write else self.write_pollable:
            os.set_blocking(fd, False)

    def send_eof(self) -> None:
        """Nothing more will be written: close the file (its data is complete)."""
        if self.write_fd >= 0:
            fd, self.write_fd = self.write_fd, -1
            os.close(fd)


class ChildLeg(Leg):
    """A child process: we write its stdin and read its stdout (both pipes)."""

    def __init__(self, process: subprocess.Popen[bytes], name: str, kill_grace: float) -> None:
        assert process.stdin is not None  # noqa: S101 (spawned with PIPE)
        assert process.stdout is not None  # noqa: S101
        self.process = process
        self.kill_grace = kill_grace
        # Our own fds: the Popen file objects are detached so closing is ours alone.
        stdin_fd = os.dup(process.stdin.fileno())
        stdout_fd = os.dup(process.stdout.fileno())
        process.stdin.close()
        process.stdout.close()
        process.stdin = process.stdout = None
        os.set_blocking(stdin_fd, False)
        os.set_blocking(stdout_fd, False)
        super().__init__(stdout_fd, stdin_fd, name)
        self.reaped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._aborted = False

    def abort(self) -> None:
        """Close the pipes and send ``SIGTERM`` now (the connection failed)."""
        self._aborted = True
        self.close()

    def close(self) -> None:
        """Close the pipes; the child is reaped (and stopped if it lingers) meanwhile."""
        if self.closed:
            return
        super().close()
        asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        process = self.process
        try:
            if self._aborted:
                _signal(process, signal.SIGTERM)
            if not await _wait_exit(process, self.kill_grace):
                _signal(process, signal.SIGTERM)
                if not await _wait_exit(process, self.kill_grace):
                    _signal(process, signal.SIGKILL)
                    await _wait_exit(process, None)
        finally:
            if not self.reaped.done():
                self.reaped.set_result(process.returncode if process.returncode is not None else -9)


def _signal(process: subprocess.Popen[bytes], number: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(number)


async def _wait_exit(process: subprocess.Popen[bytes], seconds: float | None) -> bool:
    """Wait (without blocking the loop) until ``process`` exits; True if it did."""
    if process.poll() is not None:
        return True
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        deadline = None if seconds is None else loop.time() + seconds
        while process.poll() is None:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            if pidfd >= 0:
                await _wait_readable(pidfd, remaining)
            else:  # no pidfd: poll the exit status
                await asyncio.sleep(0.05 if remaining is None else min(0.05, remaining))
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def spawn_child(spec: EndpointSpec, peer: Leg | None, *, kill_grace: float) -> ChildLeg:
    """Start ``spec``'s program with pipes for stdin and stdout.

    ``peer`` is the other leg: its addresses go into the child's environment.
    Raises ``OSError`` (``FileNotFoundError``, ``PermissionError``) if it cannot start.
    """
    environment = dict(os.environ)
    if isinstance(peer, SocketLeg):
        protocol = (
            "UNIX" if peer.sock.family == socket.AF_UNIX else "UDP" if peer.datagram else "TCP"
        )
        environment.update(
            connection_environment(peer.local_address, peer.remote_address, protocol)
        )
    # No shell unless sh: asked (its argv is /bin/sh -c COMMAND); S603 flags every call.
    process = subprocess.Popen(  # noqa: S603
        spec.argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        close_fds=True,
        restore_signals=True,
        # Only when needed: a preexec_fn costs subprocess's fast vfork path.
        preexec_fn=child_preexec(die_with_parent=False),  # noqa: PLW1509
        env=environment,
        bufsize=0,
    )
    return ChildLeg(
        process, f"{spec.kind}:{spec.argv[-1] if spec.kind == 'sh' else spec.argv[0]}", kill_grace
    )


async def open_leg(
    spec: EndpointSpec,
    *,
    peer: Leg | None = None,
    first: bool = True,
    kill_grace: float = DEFAULT_KILL_GRACE,
    family: int | None = None,
) -> Leg:
    """Open a non-listening endpoint as a leg (see the module docstring).

    ``peer`` is the leg already open on the other side (its addresses feed a PROXY
    header and a child's environment); ``first`` says whether ``spec`` is the relay's
    first endpoint (a ``file:`` is then read, else written). ``family``
    (``socket.AF_INET``/``AF_INET6``) restricts ``tcp:`` and ``udp:`` to that family.

    Raises what the connect or spawn raises: :class:`~sockit.ResolutionError`,
    :class:`~sockit.ConnectError` (``ConnectionRefusedError``...), ``TimeoutError``,
    ``FileNotFoundError``...; nothing stays open.
    """
    options = spec.options
    kind = spec.kind
    if kind == "tcp":
        assert spec.host is not None  # noqa: S101 (the grammar sets both)
        assert spec.port is not None  # noqa: S101
        local = None if options.bind is None else (options.bind.host, options.bind.port)
        sock, address = await connect_socket(
            spec.host,
            spec.port,
            timeout=options.connect_timeout,
            family=family,
            local_address=local,
        )
        return await _connected(sock, address, spec, peer)
    if kind == "unix":
        assert spec.path is not None  # noqa: S101
        sock, address = await connect_unix_socket(spec.path, timeout=options.connect_timeout)
        return await _connected(sock, address, spec, peer)
    if kind in {"udp", "unix-dgram"}:
        return await _open_datagram(spec, family)
    if kind == "stdio":
        return StdioLeg()
    if kind in {"exec", "sh"}:
        return spawn_child(spec, peer, kill_grace=kill_grace)
    if kind == "file":
        assert spec.path is not None  # noqa: S101
        return FileLeg(spec.path, write=not first, append=options.append)
    raise ValueError(f"{spec.text!r} is a listening endpoint; it has no leg to open")


async def _connected(
    sock: socket.socket, address: SocketAddress, spec: EndpointSpec, peer: Leg | None
) -> SocketLeg:
    leg = SocketLeg(sock, spec.text)
    leg.set_addresses(None, address)
    try:
        if spec.options.proxy_protocol is not None:
            await send_proxy_header(leg, spec.options.proxy_protocol, peer)
    except BaseException:
        leg.close()
        raise
    return leg


async def send_proxy_header(leg: SocketLeg, version: int, peer: Leg | None) -> None:
    """Send a PROXY v1/v2 header on ``leg`` naming ``peer``'s client and server (or
    ``UNKNOWN``/``AF_UNSPEC`` when the peer is not a socket)."""
    source = None if peer is None else peer.remote_address
    destination = None if peer is None else peer.local_address
    if source is not None and destination is not None and source.is_unix != destination.is_unix:
        source = destination = None
    if version == 1:
        if source is not None and source.is_unix:
            source = destination = None  # v1 has no UNIX addresses: UNKNOWN
        header = encode_proxy_v1(source, destination)
    else:
        header = encode_proxy_v2(source, destination)
    await asyncio.get_running_loop().sock_sendall(leg.sock, header)


async def read_proxy_header(
    leg: SocketLeg, timeout: float = DEFAULT_PROXY_HEADER_TIMEOUT
) -> ProxyHeader:
    """Read a PROXY v1/v2 header from ``leg`` (and nothing after it) and apply it.

    The header is first peeked (``MSG_PEEK``) then consumed by exactly its length, so
    the payload after it stays in the socket for the pump. With a ``PROXY`` command the
    leg's addresses become the original client's and server's.

    Raises :class:`~sockit.ProxyProtocolError` (not a header), ``TimeoutError`` (none
    complete within ``timeout``), :class:`~sockit.EndOfStream` or
    :class:`~sockit.IncompleteRead` (EOF first).
    """
    loop = asyncio.get_running_loop()
    sock = leg.sock
    deadline = loop.time() + timeout
    while True:
        try:
            data: bytes | None = sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data == b"":
            raise EndOfStream("EOF before a PROXY protocol header")
        if data:
            header = parse_proxy_header(data)
            if header is not None:
                break
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"no complete PROXY protocol header within {timeout:g} s")
        if data:
            # Part of a header: peeked bytes keep the socket readable, so readiness
            # cannot say when more arrive. Look again shortly (a header almost always
            # arrives in one segment, so this is rare).
            await asyncio.sleep(min(_PEEK_RETRY, remaining))
        else:
            await _wait_readable(sock.fileno(), remaining)
    received = 0
    while received < header.consumed:  # the bytes are there: peeked above
        chunk = sock.recv(header.consumed - received)
        if not chunk:
            raise IncompleteRead(b"", header.consumed)
        received += len(chunk)
    if header.source is not None and header.destination is not None:
        leg.set_addresses(header.destination, header.source)
    return header


async def _open_datagram(spec: EndpointSpec, family: int | None) -> SocketLeg:
    loop = asyncio.get_running_loop()
    if spec.kind == "unix-dgram":
        assert spec.path is not None  # noqa: S101
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if sys.platform.startswith("linux"):
                sock.bind("")  # autobind: an abstract name, so the peer can reply
            path = spec.path
            target = b"\0" + path[1:].encode() if path.startswith("@") else path
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        leg = SocketLeg(sock, spec.text)
        leg.set_addresses(None, SocketAddress(socket.AF_UNIX, path=path))
        return leg
    assert spec.host is not None  # noqa: S101
    assert spec.port is not None  # noqa: S101
    infos = await loop.getaddrinfo(spec.host, spec.port, family=family or 0, type=socket.SOCK_DGRAM)
    last: OSError | None = None
    for info_family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(info_family, kind, proto)
        try:
            sock.setblocking(False)
            if spec.options.bind is not None:
                sock.bind(spec.options.bind.to_sockaddr())
            sock.connect(sockaddr)
        except OSError as error:
            sock.close()
            last = error
            continue
        leg = SocketLeg(sock, spec.text)
        leg.set_addresses(None, SocketAddress.from_sockaddr(info_family, sockaddr))
        return leg
    raise last or OSError(errno.EADDRNOTAVAIL, f"no usable address for {spec.text}")


async def _wait_readable(fd: int, timeout: float | None) -> None:
    """Until ``fd`` is readable or ``timeout`` seconds passed (the caller checks which)."""
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    await wait_ready(fd, deadline=deadline)


def fail_reason(error: BaseException) -> str:
    """One short phrase for an error ending a connection (for logs)."""
    if isinstance(error, ProxyProtocolError):
        return f"bad PROXY header: {error}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
