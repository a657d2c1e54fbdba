"""The proxy client (``sockit --proxy``) through real proxies over loopback.

* SOCKS5: the Debian ``microsocks`` server, without and with username/password (RFC
  1929); a wrong password and missing credentials are :class:`ProxyAuthError`; a
  refused target is a :class:`ProxyError` with ``ECONNREFUSED``. Its log line
  ``connected to HOST:PORT`` shows what the proxy was sent, so ``--proxy-dns`` is
  checked at the proxy: ``remote`` sends the name, ``local`` an address, ``both`` the
  address or, for a name that does not resolve, the name.
* HTTP CONNECT: sockit's own :class:`HTTPProxyServer` (and ``sockit -l --proxy-type
  http`` as a process, credentials from ``NCAT_PROXY_AUTH``) with and without Basic
  authentication, a UTF-8 password included; ncat 7.93's HTTP proxy with a target that
  speaks first (python-socks' connector lost that banner in 10 of 30 tries there); a
  scripted proxy for what no real one does on demand: the tunnel's first bytes in the
  segment of the ``200``, a head split across segments or ending in bare LFs, a Digest
  challenge, a non-HTTP answer, an endless head.
* SOCKS4/4a: a minimal server in this file (no Debian package is convenient): the user
  id arrives, a name goes as SOCKS4a, a local resolution sends an IPv4 address, and the
  ``CD`` codes 91 and 93 are a refusal and an identity rejection.
* Everything else: a proxy that is down (the connection error names the proxy), one
  that never answers (``ConnectTimeoutError`` at the deadline) or hangs up, cancellation,
  targets the proxy type or DNS mode cannot carry (refused before any I/O),
  :func:`parse_proxy`'s rules, the tunnel driven by the relay's :class:`Pump`, and that
  python-socks is imported only when a SOCKS proxy is used.

Every tunnel test sends bytes both ways through the tunnel to a loopback target and
checks them byte for byte, with half-close (the target answers after its EOF). Async
tests run on asyncio and uvloop (the ``run`` fixture); every wait is bounded by
``TIMEOUT``; servers, processes and sockets are closed by each test (the leak check in
tests/conftest.py verifies it). Peers that are missing skip their tests (fail in CI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pytest

from sockit.errors import (
    AddressError,
    ConnectRefusedError,
    ConnectTimeoutError,
    ProxyAuthError,
    ProxyError,
    ResolutionError,
)
from sockit.relay.http_proxy import HTTPProxyServer
from sockit.relay.proxy_client import (
    MAX_RESPONSE_HEAD,
    ProxySpec,
    connect_via_proxy,
    parse_proxy,
)
from sockit.relay.pump import Pump, SocketLeg
from sockit.testing.fakes import FakeResolver

# free_port and listening_ports live with the HAProxy fixture (one helper module).
_SERVE_TESTS = str(Path(__file__).resolve().parent.parent / "serve")
if _SERVE_TESTS not in sys.path:
    sys.path.insert(0, _SERVE_TESTS)
from haproxy import free_port, listening_ports  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from types import TracebackType

    from conftest import Runner

TIMEOUT = 10.0
"""Seconds any single wait may take before the test fails (a loaded 2-core machine)."""

POLL_SECONDS = 0.01
"""Step of the bounded polls for "a process listens" (no event announces it)."""

PAYLOAD = bytes(range(256)) * 400
"""100 KiB of every byte value: more than one segment, and binary-clean."""

USER, PASSWORD = "alice", "s3cr3t:with:colons"


# --- socket helpers on the running loop ---------------------------------------------------


async def sendall(sock: socket.socket, data: bytes) -> None:
    async with asyncio.timeout(TIMEOUT):
        await asyncio.get_running_loop().sock_sendall(sock, data)


async def recv_until_eof(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(TIMEOUT):
        while size <= limit:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    raise AssertionError(f"more than {limit} bytes without EOF")


async def recv_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(TIMEOUT):
        while len(data) < size:
            chunk = await loop.sock_recv(sock, size - len(data))
            if not chunk:
                raise AssertionError(f"EOF after {data!r}, expected {size} bytes")
            data += chunk
    return data


async def recv_until(sock: socket.socket, end: bytes, limit: int = 65536) -> bytes:
    """Bytes up to and including ``end``, read one byte at a time (nothing more)."""
    data = b""
    while not data.endswith(end):
        assert len(data) < limit, data
        data += await recv_exactly(sock, 1)
    return data


def listener(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(16)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def accept(sock: socket.socket) -> socket.socket:
    async with asyncio.timeout(TIMEOUT):
        conn, _ = await asyncio.get_running_loop().sock_accept(sock)
    conn.setblocking(False)
    return conn


class Served:
    """A listening socket and the task serving it, for ``async with``: on exit the
    task is awaited (bounded) or cancelled, and the socket closed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = listener(host)
        self.port: int = self.listener.getsockname()[1]
        self.task: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self.serve())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self.task is not None and not self.task.done():
                self.task.cancel()
            if self.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(self.task, TIMEOUT)
        finally:
            self.listener.close()

    async def done(self) -> None:
        """Wait for the serving task to finish; re-raise what it raised."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), TIMEOUT)


class Target(Served):
    """One connection: sends ``banner`` at once, reads until EOF (or exactly ``expect``
    bytes), answers ``b"echo:"`` and everything it read, closes."""

    def __init__(
        self, host: str = "127.0.0.1", banner: bytes = b"", expect: int | None = None
    ) -> None:
        super().__init__(host)
        self.banner = banner
        self.expect = expect
        self.received: bytes | None = None

    async def serve(self) -> None:
        with await accept(self.listener) as conn:
            if self.banner:
                await sendall(conn, self.banner)
            if self.expect is None:
                self.received = await recv_until_eof(conn)
            else:
                self.received = await recv_exactly(conn, self.expect)
            await sendall(conn, b"echo:" + self.received)


def socks5_target(host: str = "127.0.0.1") -> Target:
    """A target for microsocks, which ends both directions at the first EOF of either
    (no half-close): the request is framed by its length instead of by an EOF."""
    return Target(host, expect=len(PAYLOAD))


async def exchange(sock: socket.socket, target: Target, payload: bytes = PAYLOAD) -> None:
    """Through the tunnel: send ``payload`` and EOF (only the length when the target
    expects that many bytes), read to EOF; both ends byte-exact."""
    expected = target.banner + b"echo:" + payload
    with sock:
        await sendall(sock, payload)
        if target.expect is None:
            sock.shutdown(socket.SHUT_WR)
            reply = await recv_until_eof(sock)
        else:
            reply = await recv_exactly(sock, len(expected))
            assert await recv_until_eof(sock) == b""  # the target's close came through
    await target.done()
    assert target.received == payload
    assert reply == expected


def closed_port() -> int:
    """A loopback port nothing listens on (a refused connect)."""
    return free_port()


# --- peers: microsocks, ncat, sockit itself ------------------------------------------------


def find_peer(command: str, package: str) -> str:
    """The peer's executable; skip the test if it is missing (fail in CI)."""
    executable = shutil.which(command)
    if executable is None:
        reason = (
            f"{command} is not installed (python3 dev.py test installs the Debian package "
            f"{package!r} when run as root with apt-get)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the interop tests must run", pytrace=False)
        pytest.skip(reason)
    return executable


class PeerProcess:
    """A proxy process listening on 127.0.0.1:``port``, its output in ``log_path``."""

    def __init__(self, argv: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        for _ in range(int(TIMEOUT / POLL_SECONDS) + 1):
            if self.process.poll() is not None:
                pytest.fail(f"{self.process.args!r} exited while starting:\n{self.log()}")
            if self.port in listening_ports():
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        pytest.fail(f"{self.process.args!r} did not listen within {TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def destinations(self) -> list[str]:
        """microsocks: every ``host:port`` it was asked to connect to, in order."""
        return re.findall(r"connected to (\S+)", self.log())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; always reaped (idempotent)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)


@pytest.fixture
def microsocks(tmp_path: Path) -> Iterator[Callable[..., PeerProcess]]:
    """``microsocks(user=None, password=None)`` starts a SOCKS5 proxy on 127.0.0.1."""
    executable = find_peer("microsocks", "microsocks")
    started: list[PeerProcess] = []

    def start(user: str | None = None, password: str | None = None) -> PeerProcess:
        port = free_port()
        argv = [executable, "-i", "127.0.0.1", "-p", str(port)]
        if user is not None and password is not None:
            argv += ["-u", user, "-P", password]
        peer = PeerProcess(argv, port, tmp_path / f"microsocks-{len(started)}.log")
        started.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in started:
            peer.stop()


@contextlib.asynccontextmanager
async def serving(auth: tuple[str, str] | None = None) -> AsyncIterator[int]:
    """sockit's HTTP proxy serving on 127.0.0.1 for the block; yields its port."""
    server = HTTPProxyServer("127.0.0.1", 0, auth=auth)
    addresses = await server.start()
    task = asyncio.create_task(server.serve_forever())
    try:
        yield addresses[0].port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)
        await server.aclose()


# --- a minimal SOCKS4/4a server -----------------------------------------------------------


async def pipe(source: socket.socket, destination: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on."""
    loop = asyncio.get_running_loop()
    while chunk := await loop.sock_recv(source, 65536):
        await loop.sock_sendall(destination, chunk)
    destination.shutdown(socket.SHUT_WR)


class Socks4Server(Served):
    """One SOCKS4/4a connection (``CONNECT`` only): records the user id and what the
    client asked for (an address, or a SOCKS4a name), answers ``reply`` (90 granted),
    and if granted connects there (127.0.0.1 for any name) and relays both ways."""

    def __init__(self, reply: int = 90) -> None:
        super().__init__()
        self.reply = reply
        self.user_id: str | None = None
        self.host: str | None = None
        self.socks4a = False

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        with await accept(self.listener) as conn:
            version, command, port, address = struct.unpack("!BBH4s", await recv_exactly(conn, 8))
            assert (version, command) == (4, 1)
            self.user_id = (await recv_until(conn, b"\0"))[:-1].decode("ascii")
            self.host = socket.inet_ntoa(address)
            # SOCKS4a: 0.0.0.x with x != 0 means "a name follows the user id".
            if address[:3] == b"\0\0\0" and address[3] != 0:
                self.socks4a = True
                self.host = (await recv_until(conn, b"\0"))[:-1].decode("ascii")
            answer = bytes([0, self.reply]) + struct.pack("!H", port) + address
            if self.reply != 90:
                await sendall(conn, answer)
                return
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with upstream:
                upstream.setblocking(False)
                async with asyncio.timeout(TIMEOUT):
                    host = self.host if not self.socks4a else "127.0.0.1"
                    await loop.sock_connect(upstream, (host, port))
                    await sendall(conn, answer)
                    await asyncio.gather(pipe(conn, upstream), pipe(upstream, conn))


# --- a scripted HTTP proxy ----------------------------------------------------------------


class ScriptedHTTPProxy(Served):
    """One connection: reads the request head (if ``read_head``) and records it, sends
    ``pieces`` one ``send`` each, then per ``then``: ``"echo"`` acts as the target itself
    (reads to EOF, answers ``b"echo:"`` plus what it read); ``"close"`` sends EOF and
    waits for the client's; ``"wait"`` waits for the client's EOF. ``accepted`` is set
    at the accept, ``client_closed`` when the client's EOF or reset arrived."""

    def __init__(self, pieces: list[bytes], *, then: str = "close", read_head: bool = True) -> None:
        super().__init__()
        self.pieces = pieces
        self.then = then
        self.read_head = read_head
        self.head: bytes | None = None
        self.received: bytes | None = None
        self.accepted = asyncio.Event()
        self.client_closed = asyncio.Event()

    async def serve(self) -> None:
        with await accept(self.listener) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted.set()
            if self.read_head:
                self.head = await recv_until(conn, b"\r\n\r\n")
            try:
                for piece in self.pieces:
                    await sendall(conn, piece)
                if self.then == "close":
                    conn.shutdown(socket.SHUT_WR)
                self.received = await recv_until_eof(conn)
                if self.then == "echo":
                    await sendall(conn, b"echo:" + self.received)
            except (ConnectionResetError, BrokenPipeError):
                pass
            self.client_closed.set()


# --- parse_proxy and ProxySpec ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "host", "port"),
    [
        ("127.0.0.1", None, "127.0.0.1", 3128),
        ("127.0.0.1", "http", "127.0.0.1", 3128),
        ("127.0.0.1", "socks4", "127.0.0.1", 1080),
        ("127.0.0.1", "SOCKS5", "127.0.0.1", 1080),
        ("127.0.0.1:8080", "socks5", "127.0.0.1", 8080),
        ("[::1]:8080", "http", "::1", 8080),
        ("[::1]", "socks5", "::1", 1080),
        ("::1", "socks5", "::1", 1080),
        ("proxy.example:1081", "socks5", "proxy.example", 1081),
    ],
)
def test_parse_proxy_address_and_default_ports(
    text: str, kind: str | None, host: str, port: int
) -> None:
    spec = parse_proxy(text, kind)
    assert (spec.host, spec.port) == (host, port)
    assert spec.type == (kind or "http").lower()
    assert spec.dns == "remote"  # ncat's default
    assert (spec.username, spec.password) == (None, None)


def test_parse_proxy_credentials_per_type_and_environment_fallback() -> None:
    socks5 = parse_proxy("127.0.0.1", "socks5", "joe:pa:ss")
    assert (socks5.username, socks5.password) == ("joe", "pa:ss")
    http = parse_proxy("127.0.0.1", "http", "joe:")
    assert (http.username, http.password) == ("joe", "")
    # SOCKS4 has a user id only; ncat sends the whole --proxy-auth text as that id.
    socks4 = parse_proxy("127.0.0.1", "socks4", "joe:secret")
    assert (socks4.username, socks4.password) == ("joe:secret", None)
    # NCAT_PROXY_AUTH (passed in by the caller) is used only without --proxy-auth.
    assert parse_proxy("127.0.0.1", None, None, env_auth="env:pw").username == "env"
    assert parse_proxy("127.0.0.1", None, "", env_auth="env:pw").username == "env"
    assert parse_proxy("127.0.0.1", None, "opt:pw", env_auth="env:pw").username == "opt"
    assert parse_proxy("127.0.0.1", None, "", env_auth="").username is None
    assert parse_proxy("127.0.0.1", "socks5", dns="LOCAL").dns == "local"
    # The password never shows in a repr (logs, tracebacks).
    assert "pa:ss" not in repr(socks5)
    assert str(socks5) == "SOCKS5 proxy 127.0.0.1:1080"


@pytest.mark.parametrize(
    ("text", "kind", "auth", "dns", "error", "match"),
    [
        ("unix:/tmp/proxy.sock", None, None, None, AddressError, "HOST"),
        (":1080", None, None, None, AddressError, "HOST"),
        ("127.0.0.1:99999", None, None, None, AddressError, "99999"),
        ("127.0.0.1:0", None, None, None, AddressError, "port 0"),
        ("[::1", None, None, None, AddressError, r"\[::1"),
        ("127.0.0.1", "socks6", None, None, ValueError, "socks6"),
        ("127.0.0.1", None, None, "sometimes", ValueError, "sometimes"),
        ("127.0.0.1", "socks5", "joe", None, ValueError, "USER:PASS"),
        ("127.0.0.1", "http", "joe", None, ValueError, "USER:PASS"),
        ("127.0.0.1", "socks5", "joe:", None, ValueError, "RFC 1929"),
        ("127.0.0.1", "socks5", ":pw", None, ValueError, "RFC 1929"),
        ("127.0.0.1", "socks5", "j\u00f6e:pw", None, ValueError, "ASCII"),
        ("127.0.0.1", "socks5", "j" * 256 + ":pw", None, ValueError, "255"),
        ("127.0.0.1", "socks4", "j\u00f6e", None, ValueError, "ASCII"),
    ],
)
def test_parse_proxy_rejects_what_cannot_work(
    text: str,
    kind: str | None,
    auth: str | None,
    dns: str | None,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        parse_proxy(text, kind, auth, dns)


def test_proxy_spec_checks_its_own_fields() -> None:
    with pytest.raises(ValueError, match="user id only"):
        ProxySpec("socks4", "127.0.0.1", 1080, "joe", "pw")
    with pytest.raises(ValueError, match="both"):
        ProxySpec("http", "127.0.0.1", 3128, None, "pw")
    with pytest.raises(ValueError, match="RFC 7617"):
        ProxySpec("http", "127.0.0.1", 3128, "a:b", "pw")
    assert ProxySpec("http", "[::1]", 3128).address == "[::1]:3128"


# --- SOCKS5 through microsocks -------------------------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_socks5_tunnel_carries_bytes_both_ways(
    run: Runner, microsocks: Callable[..., PeerProcess], authenticated: bool, host: str
) -> None:
    peer = microsocks(USER, PASSWORD) if authenticated else microsocks()
    auth = f"{USER}:{PASSWORD}" if authenticated else None
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", auth)

    async def main() -> None:
        async with socks5_target() as target:
            sock, address = await connect_via_proxy(spec, host, target.port, timeout=TIMEOUT)
            assert (address.host, address.port) == ("127.0.0.1", peer.port)
            assert sock.getblocking() is False
            await exchange(sock, target)
        # Remote DNS (the default): the proxy got the name as written.
        assert peer.destinations() == [f"{host}:{target.port}"]

    run(main)


def test_socks5_wrong_password_and_missing_credentials_are_auth_errors(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks(USER, PASSWORD)

    async def main() -> None:
        wrong = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", f"{USER}:wrong")
        with pytest.raises(ProxyAuthError) as info:
            await connect_via_proxy(wrong, "127.0.0.1", 7, timeout=TIMEOUT)
        error = info.value
        assert error.errno == errno.EACCES
        assert error.proxy == f"127.0.0.1:{peer.port}"
        assert error.target == "127.0.0.1:7"
        assert f"127.0.0.1:{peer.port}" in str(error)
        assert "127.0.0.1:7" in str(error)
        assert repr(USER) in str(error)
        assert "\n" not in str(error)

        anonymous = parse_proxy(f"127.0.0.1:{peer.port}", "socks5")
        with pytest.raises(ProxyAuthError, match=r"requires a user name and password"):
            await connect_via_proxy(anonymous, "127.0.0.1", 7, timeout=TIMEOUT)

    run(main)
    assert peer.destinations() == []


def test_socks5_refused_target_is_a_proxy_error_with_econnrefused(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5")
    port = closed_port()

    async def main() -> None:
        with pytest.raises(ProxyError) as info:
            await connect_via_proxy(spec, "127.0.0.1", port, timeout=TIMEOUT)
        error = info.value
        assert not isinstance(error, ProxyAuthError)
        assert error.reply == 5  # RFC 1928: connection refused
        assert error.errno == errno.ECONNREFUSED
        assert f"127.0.0.1:{peer.port}" in str(error)
        assert f"127.0.0.1:{port}" in str(error)

    run(main)


def test_socks5_dns_local_sends_the_address(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", dns="local")
    resolver = FakeResolver({"target.test": ["127.0.0.1"]})

    async def main() -> None:
        async with socks5_target() as target:
            sock, _ = await connect_via_proxy(
                spec, "target.test", target.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, target)
        assert peer.destinations() == [f"127.0.0.1:{target.port}"]
        assert ("target.test", target.port, 0) in resolver.calls

    run(main)


def test_socks5_dns_remote_does_not_resolve_locally(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", dns="remote")
    resolver = FakeResolver()  # would refuse "localhost": it must not be asked

    async def main() -> None:
        async with socks5_target() as target:
            sock, _ = await connect_via_proxy(
                spec, "localhost", target.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, target)
        assert peer.destinations() == [f"localhost:{target.port}"]
        assert all(call[0] != "localhost" for call in resolver.calls)

    run(main)


def test_socks5_dns_both_resolves_locally_and_falls_back_to_the_proxy(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", dns="both")
    resolver = FakeResolver({"target.test": ["127.0.0.1"]})

    async def main() -> None:
        async with socks5_target() as resolved:
            sock, _ = await connect_via_proxy(
                spec, "target.test", resolved.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, resolved)
        # "localhost" is unknown to the fake resolver: it goes to the proxy as a name.
        async with socks5_target() as unresolved:
            sock, _ = await connect_via_proxy(
                spec, "localhost", unresolved.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, unresolved)
        assert peer.destinations() == [
            f"127.0.0.1:{resolved.port}",
            f"localhost:{unresolved.port}",
        ]

    run(main)


def test_socks5_dns_local_name_error_never_reaches_the_proxy(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5", dns="local")

    async def main() -> None:
        with pytest.raises(ResolutionError, match="localhost"):
            await connect_via_proxy(spec, "localhost", 7, timeout=TIMEOUT, resolver=FakeResolver())

    run(main)
    assert "client" not in peer.log()


def test_socks5_ipv6_target(run: Runner, microsocks: Callable[..., PeerProcess]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5")

    async def main() -> None:
        try:
            target = socks5_target("::1")
        except OSError as error:
            pytest.skip(f"no IPv6 loopback: {error}")
        async with target:
            sock, _ = await connect_via_proxy(spec, "::1", target.port, timeout=TIMEOUT)
            await exchange(sock, target)

    run(main)


def test_tunnel_driven_by_the_relay_pump(
    run: Runner, microsocks: Callable[..., PeerProcess]
) -> None:
    # What ncat mode does with the tunnel: a SocketLeg in a Pump (add_reader/add_writer
    # and splice on the socket python-socks used with sock_recv/sock_sendall).
    peer = microsocks()
    spec = parse_proxy(f"127.0.0.1:{peer.port}", "socks5")

    async def main() -> None:
        async with socks5_target() as target:
            tunnel, _ = await connect_via_proxy(spec, "127.0.0.1", target.port, timeout=TIMEOUT)
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            with ours:
                pump = Pump(SocketLeg(theirs, "local"), SocketLeg(tunnel, "tunnel"))
                running = asyncio.create_task(pump.run())
                await sendall(ours, PAYLOAD)
                # microsocks has no half-close: read the answer, then the target's EOF
                # (passed on by the pump), and only then send ours.
                reply = await recv_exactly(ours, len(b"echo:" + PAYLOAD))
                assert await recv_until_eof(ours) == b""
                ours.shutdown(socket.SHUT_WR)
                result = await asyncio.wait_for(running, TIMEOUT)
            await target.done()
        assert result.clean, result
        assert target.received == PAYLOAD
        assert reply == b"echo:" + PAYLOAD

    run(main)


# --- HTTP CONNECT through sockit's own proxy ----------------------------------------------


@pytest.mark.parametrize("authenticated", [False, True], ids=["no-auth", "auth"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_http_tunnel_carries_bytes_both_ways(run: Runner, authenticated: bool, host: str) -> None:
    # A non-ASCII password: RFC 7617 UTF-8, which sockit's proxy expects.
    password = "p\u00e4ss:w\u00f6rd"
    auth = (USER, password) if authenticated else None

    async def main() -> None:
        async with serving(auth) as port, Target() as target:
            credentials = f"{USER}:{password}" if authenticated else None
            spec = parse_proxy(f"127.0.0.1:{port}", "http", credentials)
            sock, address = await connect_via_proxy(spec, host, target.port, timeout=TIMEOUT)
            assert (address.host, address.port) == ("127.0.0.1", port)
            await exchange(sock, target)

    run(main)


def test_http_wrong_or_missing_credentials_are_auth_errors(run: Runner) -> None:
    async def main() -> None:
        async with serving((USER, PASSWORD)) as port:
            wrong = parse_proxy(f"127.0.0.1:{port}", "http", f"{USER}:wrong")
            with pytest.raises(ProxyAuthError) as info:
                await connect_via_proxy(wrong, "127.0.0.1", 7, timeout=TIMEOUT)
            error = info.value
            assert (error.reply, error.errno) == (407, errno.EACCES)
            assert (error.proxy, error.target) == (f"127.0.0.1:{port}", "127.0.0.1:7")
            assert f"127.0.0.1:{port}" in str(error)
            assert "127.0.0.1:7" in str(error)
            assert repr(USER) in str(error)

            anonymous = parse_proxy(f"127.0.0.1:{port}", "http")
            with pytest.raises(ProxyAuthError, match=r"requires credentials"):
                await connect_via_proxy(anonymous, "127.0.0.1", 7, timeout=TIMEOUT)

    run(main)


def test_http_refused_target_is_a_proxy_error(run: Runner) -> None:
    port = closed_port()

    async def main() -> None:
        async with serving() as proxy_port:
            spec = parse_proxy(f"127.0.0.1:{proxy_port}", "http")
            with pytest.raises(ProxyError) as info:
                await connect_via_proxy(spec, "127.0.0.1", port, timeout=TIMEOUT)
        error = info.value
        assert not isinstance(error, ProxyAuthError)
        assert error.reply == 502
        assert f"127.0.0.1:{proxy_port}" in str(error)
        assert f"127.0.0.1:{port}" in str(error)
        assert "502 Bad Gateway" in str(error)

    run(main)


def test_http_ipv6_target(run: Runner) -> None:
    async def main() -> None:
        try:
            target = Target("::1")
        except OSError as error:
            pytest.skip(f"no IPv6 loopback: {error}")
        async with serving() as port, target:
            spec = parse_proxy(f"127.0.0.1:{port}", "http")
            sock, _ = await connect_via_proxy(spec, "::1", target.port, timeout=TIMEOUT)
            await exchange(sock, target)

    run(main)


def test_http_proxy_process_sockit_listen_with_ncat_proxy_auth(run: Runner) -> None:
    # Acceptance 5's proxy: `sockit -l --proxy-type http`, credentials from the
    # environment (NCAT_PROXY_AUTH), as a separate process.
    environment = dict(os.environ, NCAT_PROXY_AUTH=f"{USER}:{PASSWORD}")
    process = subprocess.Popen(
        [sys.executable, "-m", "sockit", "-l", "127.0.0.1", "0", "--proxy-type", "http"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment,
    )
    try:
        assert process.stderr is not None
        ready, _, _ = select.select([process.stderr], [], [], TIMEOUT)
        assert ready, "sockit -l --proxy-type http printed nothing"
        line = process.stderr.readline().decode()
        assert "Listening on" in line, line
        port = int(line.rsplit(":", 1)[1])

        async def main() -> None:
            good = parse_proxy(f"127.0.0.1:{port}", "http", env_auth=f"{USER}:{PASSWORD}")
            async with Target() as target:
                sock, _ = await connect_via_proxy(good, "localhost", target.port, timeout=TIMEOUT)
                await exchange(sock, target)
            for auth in (f"{USER}:wrong", None):
                spec = parse_proxy(f"127.0.0.1:{port}", "http", auth)
                with pytest.raises(ProxyAuthError):
                    await connect_via_proxy(spec, "127.0.0.1", 7, timeout=TIMEOUT)

        run(main)
    finally:
        process.terminate()
        process.wait(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


def test_http_through_ncat_keeps_a_banner_sent_with_the_answer(run: Runner, tmp_path: Path) -> None:
    # The target speaks first, so its banner may share a segment with ncat's "200":
    # python-socks' connector (one recv(65536)) dropped it in 10 of 30 tries here.
    ncat = find_peer("ncat", "ncat")
    port = free_port()
    peer = PeerProcess(
        [ncat, "-l", "-k", "--proxy-type", "http", "127.0.0.1", str(port)],
        port,
        tmp_path / "ncat.log",
    )
    try:
        spec = parse_proxy(f"127.0.0.1:{port}", "http")

        async def main() -> None:
            for round_number in range(10):
                # ncat 7.93's proxy has no half-close either: a length-framed request.
                banner = b"220 ready %d\r\n" % round_number
                async with Target(banner=banner, expect=len(b"QUIT\r\n")) as target:
                    sock, _ = await connect_via_proxy(
                        spec, "127.0.0.1", target.port, timeout=TIMEOUT
                    )
                    await exchange(sock, target, payload=b"QUIT\r\n")

        run(main)
    finally:
        peer.stop()


# --- HTTP CONNECT: the answer head, exactly -----------------------------------------------


@pytest.mark.parametrize(
    "pieces",
    [
        [b"HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\n220 banner\r\n"],
        [b"HTTP/1.1 200 Connection est", b"ablished\r\nProxy-Agent: t", b"est\r\n\r", b"\n"],
        [b"HTTP/1.1 200 OK\r\n\r\n", b"220 banner\r\n"],
        [b"HTTP/1.0 200 OK\n\n220 banner\r\n"],
        [b"HTTP/1.1 204\r\n\r\n"],
    ],
    ids=["banner-in-answer-segment", "head-in-pieces", "banner-after", "bare-lf", "204"],
)
def test_http_answer_head_is_consumed_exactly(run: Runner, pieces: list[bytes]) -> None:
    whole = b"".join(pieces)
    end = re.search(rb"\n\r?\n", whole)
    assert end is not None
    banner = whole[end.end() :]

    async def main() -> None:
        async with ScriptedHTTPProxy(pieces, then="echo") as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "http", f"{USER}:{PASSWORD}")
            sock, _ = await connect_via_proxy(spec, "localhost", 4242, timeout=TIMEOUT)
            with sock:
                await sendall(sock, PAYLOAD)
                sock.shutdown(socket.SHUT_WR)
                reply = await recv_until_eof(sock)
            await proxy.done()
        assert reply == banner + b"echo:" + PAYLOAD
        assert proxy.received == PAYLOAD
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert proxy.head == (
            b"CONNECT localhost:4242 HTTP/1.1\r\nHost: localhost:4242\r\n"
            b"Proxy-Authorization: Basic " + token.encode() + b"\r\n\r\n"
        )

    run(main)


@pytest.mark.parametrize(
    ("dns", "host", "sent"),
    [
        ("remote", "target.test", b"target.test:4242"),
        ("local", "target.test", b"127.0.0.1:4242"),
        ("both", "target.test", b"127.0.0.1:4242"),
        ("both", "unknown.test", b"unknown.test:4242"),
        ("none", "::1", b"[::1]:4242"),
    ],
)
def test_http_request_target_per_dns_mode(run: Runner, dns: str, host: str, sent: bytes) -> None:
    resolver = FakeResolver({"target.test": ["127.0.0.1"]})

    async def main() -> None:
        async with ScriptedHTTPProxy([b"HTTP/1.1 200 OK\r\n\r\n"], then="echo") as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "http", dns=dns)
            sock, _ = await connect_via_proxy(spec, host, 4242, timeout=TIMEOUT, resolver=resolver)
            with sock:
                sock.shutdown(socket.SHUT_WR)
                assert await recv_until_eof(sock) == b"echo:"
            await proxy.done()
        assert proxy.head == b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (sent, sent)

    run(main)


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Digest realm="x"\r\n\r\n'
            ),
            ProxyAuthError,
            r"wants Digest authentication; sockit sends Basic only",
        ),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", ProxyError, r"403 Forbidden"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ProxyError, r"no HTTP status line: 'SSH-2.0"),
        (b"", ProxyError, r"closed the connection before answering"),
        (
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (MAX_RESPONSE_HEAD + 100) + b"\r\n\r\n",
            ProxyError,
            rf"longer than {MAX_RESPONSE_HEAD} bytes",
        ),
    ],
    ids=["digest", "403", "not-http", "eof", "endless-head"],
)
def test_http_bad_answers(run: Runner, answer: bytes, error: type[ProxyError], match: str) -> None:
    async def main() -> None:
        async with ScriptedHTTPProxy([answer]) as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "http", f"{USER}:{PASSWORD}")
            with pytest.raises(error, match=match) as info:
                await connect_via_proxy(spec, "127.0.0.1", 4242, timeout=TIMEOUT)
            await proxy.done()
        assert proxy.client_closed.is_set()
        assert info.value.target == "127.0.0.1:4242"
        assert f"127.0.0.1:{proxy.port}" in str(info.value)
        assert "\n" not in str(info.value)

    run(main)


# --- SOCKS4 / SOCKS4a ---------------------------------------------------------------------


def test_socks4a_sends_the_user_id_and_the_name(run: Runner) -> None:
    async def main() -> None:
        async with Socks4Server() as proxy, Target() as target:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "socks4", "joe")
            sock, _ = await connect_via_proxy(spec, "localhost", target.port, timeout=TIMEOUT)
            await exchange(sock, target)
            await proxy.done()
        assert (proxy.user_id, proxy.host, proxy.socks4a) == ("joe", "localhost", True)

    run(main)


def test_socks4_dns_local_sends_an_ipv4_address(run: Runner) -> None:
    # SOCKS4 carries IPv4 only: the IPv6 answer is skipped even though it comes first.
    resolver = FakeResolver({"target.test": ["::1", "127.0.0.1"]})

    async def main() -> None:
        async with Socks4Server() as proxy, Target() as target:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "socks4", dns="local")
            sock, _ = await connect_via_proxy(
                spec, "target.test", target.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, target)
            await proxy.done()
        assert (proxy.user_id, proxy.host, proxy.socks4a) == ("", "127.0.0.1", False)
        assert ("target.test", target.port, socket.AF_INET) in resolver.calls

    run(main)


def test_socks4_dns_both_falls_back_to_socks4a_without_an_ipv4_address(run: Runner) -> None:
    resolver = FakeResolver({"v6only.test": ["::1"]})

    async def main() -> None:
        async with Socks4Server() as proxy, Target() as target:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "socks4", dns="both")
            sock, _ = await connect_via_proxy(
                spec, "v6only.test", target.port, timeout=TIMEOUT, resolver=resolver
            )
            await exchange(sock, target)
            await proxy.done()
        assert (proxy.host, proxy.socks4a) == ("v6only.test", True)

    run(main)


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (91, ProxyError, r"refused the tunnel to 127\.0\.0\.1:4242: Request rejected"),
        (93, ProxyAuthError, r"rejected user id 'joe' for 127\.0\.0\.1:4242"),
    ],
)
def test_socks4_refusals(run: Runner, reply: int, error: type[ProxyError], match: str) -> None:
    async def main() -> None:
        async with Socks4Server(reply=reply) as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "socks4", "joe")
            with pytest.raises(error, match=match) as info:
                await connect_via_proxy(spec, "127.0.0.1", 4242, timeout=TIMEOUT)
            await proxy.done()
        assert info.value.reply == reply
        assert f"127.0.0.1:{proxy.port}" in str(info.value)

    run(main)


# --- failures common to every type --------------------------------------------------------


@pytest.mark.parametrize("kind", ["socks4", "socks5", "http"])
def test_proxy_down_is_a_connection_error_naming_the_proxy(run: Runner, kind: str) -> None:
    port = closed_port()
    spec = parse_proxy(f"127.0.0.1:{port}", kind)

    async def main() -> None:
        with pytest.raises(ConnectRefusedError) as info:
            await connect_via_proxy(spec, "127.0.0.1", 4242, timeout=TIMEOUT)
        error = info.value
        assert (error.host, error.port, error.errno) == ("127.0.0.1", port, errno.ECONNREFUSED)
        message = str(error)
        assert message.startswith(f"cannot connect to 127.0.0.1:{port}: "), message
        assert "proxy for 127.0.0.1:4242" in message
        assert "\n" not in message

    run(main)


@pytest.mark.parametrize("kind", ["socks4", "socks5", "http"])
def test_silent_proxy_times_out_at_the_deadline(run: Runner, kind: str) -> None:
    # The kernel completes the TCP handshake (listen backlog) but nobody ever answers.
    async def main() -> None:
        with listener() as silent:
            port = silent.getsockname()[1]
            spec = parse_proxy(f"127.0.0.1:{port}", kind)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectTimeoutError) as info:
                await connect_via_proxy(spec, "localhost", 4242, timeout=0.3)
            elapsed = loop.time() - started
        assert 0.25 <= elapsed < TIMEOUT
        error = info.value
        assert isinstance(error, TimeoutError)
        assert (error.host, error.port) == ("127.0.0.1", port)
        assert "localhost:4242" in str(error)
        assert "within 0.3 s" in str(error)

    run(main)


@pytest.mark.parametrize("kind", ["socks4", "socks5", "http"])
def test_proxy_hanging_up_is_a_proxy_error(run: Runner, kind: str) -> None:
    async def main() -> None:
        async with ScriptedHTTPProxy([], then="wait", read_head=False) as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", kind)
            # The scripted proxy reads to EOF: hang up on the client from here instead.
            task = asyncio.create_task(connect_via_proxy(spec, "127.0.0.1", 4242, timeout=TIMEOUT))
            await asyncio.wait_for(proxy.accepted.wait(), TIMEOUT)
            assert proxy.task is not None
            proxy.task.cancel()  # closes its end of the connection
            with pytest.raises(ProxyError) as info:
                await asyncio.wait_for(task, TIMEOUT)
        assert info.value.proxy == f"127.0.0.1:{proxy.port}"
        assert "127.0.0.1:4242" in str(info.value)

    run(main)


def test_cancelled_connect_closes_the_socket(run: Runner) -> None:
    async def main() -> None:
        async with ScriptedHTTPProxy([], then="wait", read_head=False) as proxy:
            spec = parse_proxy(f"127.0.0.1:{proxy.port}", "socks5")
            task = asyncio.create_task(connect_via_proxy(spec, "127.0.0.1", 4242, timeout=None))
            await asyncio.wait_for(proxy.accepted.wait(), TIMEOUT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The proxy sees EOF: the client's socket was closed, not leaked.
            await asyncio.wait_for(proxy.client_closed.wait(), TIMEOUT)

    run(main)


@pytest.mark.parametrize(
    ("kind", "dns", "host", "match"),
    [
        ("socks4", "remote", "::1", "SOCKS4 has no IPv6"),
        ("socks5", "none", "localhost", "must be an IP address"),
        ("http", "none", "localhost", "must be an IP address"),
        ("socks5", "remote", "fe80::1%lo", "scope"),
        ("http", "remote", "bad host", "bad host"),
    ],
)
def test_targets_the_proxy_cannot_carry_fail_before_any_io(
    run: Runner, kind: str, dns: str, host: str, match: str
) -> None:
    # Nothing listens at the proxy's address: an attempt to connect would be refused.
    spec = parse_proxy(f"127.0.0.1:{closed_port()}", kind, dns=dns)

    async def main() -> None:
        with pytest.raises(AddressError, match=match):
            await connect_via_proxy(spec, host, 4242, timeout=TIMEOUT)

    run(main)


# --- python-socks is optional and imported lazily -----------------------------------------


def test_python_socks_is_not_imported_by_sockit_or_version() -> None:
    code = (
        "import sys, sockit\n"
        "from sockit.relay.proxy_client import parse_proxy\n"
        "parse_proxy('127.0.0.1', 'socks5', 'a:b')\n"
        "print('python_socks' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == "False"
    version = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sockit", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert version.stdout.startswith("sockit ")
    assert "python_socks" not in version.stderr
    assert "sockit.relay.proxy_client" not in version.stderr


def test_without_python_socks_socks_fails_clearly_and_http_still_works() -> None:
    port = closed_port()
    code = (
        "import asyncio, sys\n"
        "sys.modules['python_socks'] = None  # as if not installed\n"
        "from sockit.relay.proxy_client import connect_via_proxy, parse_proxy\n"
        "async def main():\n"
        f"    for kind in ('socks5', 'http'):\n"
        f"        spec = parse_proxy('127.0.0.1:{port}', kind)\n"
        "        try:\n"
        "            await connect_via_proxy(spec, '127.0.0.1', 7, timeout=5)\n"
        "        except (ImportError, OSError) as error:\n"
        "            print(kind, type(error).__name__, error)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("socks5 ImportError "), lines
    assert "pip install 'sockit[proxy]'" in lines[0]
    assert lines[1].startswith("http ConnectRefusedError "), lines
