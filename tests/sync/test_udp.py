"""UDP sockets (sockit.sync.udp) over real loopback sockets, IPv4 and IPv6."""

from __future__ import annotations

import errno
import math
import platform
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sockit.addr import SocketAddress, format_host_port
from sockit.errors import (
    AddressError,
    ClosedResourceError,
    DatagramTooLarge,
    DatagramTruncated,
)
from sockit.sync import udp
from sockit.sync.udp import (
    IPV4_MAX_DATAGRAM,
    IPV6_MAX_DATAGRAM,
    UDPSocket,
    open_udp,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Long enough never to expire on a loaded machine when data is on its way; the tests
# that want a timeout use their own short one.
PATIENCE = 5.0


def _ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback_works()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="IPv6 loopback (::1) is unavailable")

LOOPBACKS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=needs_ipv6),
]


@pytest.fixture
def sockets() -> Iterator[Callable[..., UDPSocket]]:
    """A factory for open_udp() whose sockets are all closed at teardown."""
    with ExitStack() as stack:

        def make(*args: object, **kwargs: object) -> UDPSocket:
            return stack.enter_context(open_udp(*args, **kwargs))  # type: ignore[arg-type]

        yield make


@pytest.fixture(params=LOOPBACKS)
def loopback(request: pytest.FixtureRequest) -> str:
    host: str = request.param
    return host


def _closed_port(host: str) -> int:
    """A UDP port on ``host`` where nothing is bound (it was, a moment ago)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


# --- basic datagram semantics ---------------------------------------------------------


def test_round_trip_reports_sender(sockets: Callable[..., UDPSocket], loopback: str) -> None:
    server = sockets(loopback)
    client = sockets(loopback)
    client.sendto(b"ping", server.local_address)
    data, sender = server.recvfrom(timeout=PATIENCE)
    assert data == b"ping"
    assert sender == client.local_address
    assert sender.host == loopback
    server.sendto(b"pong", sender)
    assert client.recvfrom(timeout=PATIENCE) == (b"pong", server.local_address)


def test_host_port_tuple_destination(sockets: Callable[..., UDPSocket], loopback: str) -> None:
    server = sockets(loopback)
    client = sockets(loopback)
    client.sendto(b"tuple", (loopback, server.local_address.port))
    client.sendto(b"service-string-port", (loopback, str(server.local_address.port)))
    assert server.recvfrom(timeout=PATIENCE)[0] == b"tuple"
    assert server.recvfrom(timeout=PATIENCE)[0] == b"service-string-port"


def test_zero_length_datagram_is_data(sockets: Callable[..., UDPSocket], loopback: str) -> None:
    server = sockets(loopback)
    client = sockets(remote=(loopback, server.local_address.port))
    client.send(b"")
    client.send(b"after")
    data, sender = server.recvfrom(timeout=PATIENCE)
    assert (data, sender) == (b"", client.local_address)
    # Not EOF: the next datagram follows, and an empty one can be received again.
    assert server.recvfrom(timeout=PATIENCE)[0] == b"after"
    server.sendto(b"", sender)
    assert client.recv(timeout=PATIENCE) == b""


def test_interleaved_peers_are_told_apart(sockets: Callable[..., UDPSocket], loopback: str) -> None:
    server = sockets(loopback)
    clients = [sockets(loopback) for _ in range(3)]
    for round_number in range(3):
        for index, client in enumerate(clients):
            client.sendto(f"{round_number}:{index}".encode(), server.local_address)
        for index, client in enumerate(clients):
            data, sender = server.recvfrom(timeout=PATIENCE)
            assert data == f"{round_number}:{index}".encode()
            assert sender == client.local_address
            server.sendto(b"to " + data, sender)
        for index, client in enumerate(clients):
            assert client.recvfrom(timeout=PATIENCE) == (
                f"to {round_number}:{index}".encode(),
                server.local_address,
            )


def test_message_boundaries_are_kept(sockets: Callable[..., UDPSocket], loopback: str) -> None:
    server = sockets(loopback)
    client = sockets(loopback)
    messages = [b"a", b"bb", b"", b"ccc" * 100]
    for message in messages:
        client.sendto(message, server.local_address)
    assert [server.recvfrom(timeout=PATIENCE)[0] for _ in messages] == messages


def test_buffer_types_can_be_sent(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    client.sendto(bytearray(b"array"), server.local_address)
    client.sendto(memoryview(b"xxview")[2:], server.local_address)
    # A memoryview of wider items: the limit check counts bytes, not items.
    client.sendto(memoryview(bytearray(8)).cast("I"), server.local_address)
    assert server.recvfrom(timeout=PATIENCE)[0] == b"array"
    assert server.recvfrom(timeout=PATIENCE)[0] == b"view"
    assert server.recvfrom(timeout=PATIENCE)[0] == bytes(8)


# --- truncation -------------------------------------------------------------------------


def test_truncated_datagram_raises_with_real_size(
    sockets: Callable[..., UDPSocket], loopback: str
) -> None:
    server = sockets(loopback)
    client = sockets(loopback)
    payload = bytes(range(256)) * 8  # 2048 bytes
    payload = payload[:2000]
    client.sendto(payload, server.local_address)
    client.sendto(b"next", server.local_address)
    with pytest.raises(DatagramTruncated) as caught:
        server.recvfrom(max_bytes=100, timeout=PATIENCE)
    assert caught.value.size == 2000
    assert caught.value.data == payload[:100]
    assert caught.value.address == client.local_address
    # The truncated datagram is consumed; the next one arrives whole.
    assert server.recvfrom(max_bytes=100, timeout=PATIENCE) == (b"next", client.local_address)


def test_exact_fit_is_not_truncation(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    client.sendto(b"x" * 100, server.local_address)
    assert server.recvfrom(max_bytes=100, timeout=PATIENCE)[0] == b"x" * 100


def test_truncation_on_connected_recv(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets(remote=("127.0.0.1", server.local_address.port))
    server.sendto(b"y" * 50, client.local_address)
    with pytest.raises(DatagramTruncated) as caught:
        client.recv(10, timeout=PATIENCE)
    assert (caught.value.size, caught.value.data) == (50, b"y" * 10)


def test_max_bytes_larger_than_default_buffer(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    client.sendto(b"small", server.local_address)
    client.sendto(b"z" * 3000, server.local_address)
    assert server.recvfrom(200_000, timeout=PATIENCE)[0] == b"small"
    # The grown buffer is reused, and a smaller max_bytes still truncates correctly.
    with pytest.raises(DatagramTruncated) as caught:
        server.recvfrom(1000, timeout=PATIENCE)
    assert caught.value.size == 3000


def test_negative_max_bytes_is_rejected(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    with pytest.raises(ValueError, match="max_bytes"):
        server.recvfrom(-1, timeout=0)


# --- size limits ------------------------------------------------------------------------


def test_largest_ipv4_datagram_round_trips(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    payload = bytes(range(256)) * (IPV4_MAX_DATAGRAM // 256) + b"t" * (IPV4_MAX_DATAGRAM % 256)
    assert len(payload) == 65507
    client.sendto(payload, server.local_address)
    assert server.recvfrom(timeout=PATIENCE) == (payload, client.local_address)


def test_one_byte_more_than_ipv4_allows_is_too_large(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    with pytest.raises(DatagramTooLarge) as caught:
        client.sendto(b"x" * 65508, server.local_address)
    assert (caught.value.size, caught.value.limit) == (65508, 65507)
    assert caught.value.errno == errno.EMSGSIZE
    assert isinstance(caught.value, OSError)
    # Nothing was sent: the next datagram is the first one the server sees.
    client.sendto(b"marker", server.local_address)
    assert server.recvfrom(timeout=PATIENCE)[0] == b"marker"


@needs_ipv6
def test_ipv6_limit_is_65527(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("::1")
    client = sockets("::1")
    payload = b"6" * IPV6_MAX_DATAGRAM
    client.sendto(payload, server.local_address)
    assert server.recvfrom(timeout=PATIENCE)[0] == payload
    with pytest.raises(DatagramTooLarge) as caught:
        client.sendto(payload + b"!", server.local_address)
    assert (caught.value.size, caught.value.limit) == (65528, 65527)


def test_connected_send_checks_the_limit(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets(remote=("127.0.0.1", server.local_address.port))
    with pytest.raises(DatagramTooLarge) as caught:
        client.send(b"x" * 65508)
    assert caught.value.limit == 65507


@needs_ipv6
def test_ipv4_destination_on_dual_stack_socket_has_ipv4_limit(
    sockets: Callable[..., UDPSocket],
) -> None:
    server = sockets("127.0.0.1")
    dual = sockets()
    with pytest.raises(DatagramTooLarge) as caught:
        dual.sendto(b"x" * 65508, server.local_address)
    assert caught.value.limit == 65507


# --- timeouts ---------------------------------------------------------------------------


def test_recvfrom_timeout_raises_timeout_error(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"recvfrom timed out after 0\.05 s"):
        server.recvfrom(timeout=0.05)
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < PATIENCE


def test_default_timeout_attribute_and_overrides(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    assert server.timeout is None
    server.timeout = 0.02
    with pytest.raises(TimeoutError):
        server.recvfrom()
    with pytest.raises(TimeoutError):
        server.recv()
    # timeout=0 tries once without waiting.
    with pytest.raises(TimeoutError):
        server.recvfrom(timeout=0)
    client.sendto(b"late", server.local_address)
    # math.inf overrides the default and waits as long as it takes (here: not long).
    assert server.recvfrom(timeout=math.inf)[0] == b"late"


def test_timeout_loses_nothing(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    client = sockets("127.0.0.1")
    with pytest.raises(TimeoutError):
        server.recvfrom(timeout=0.01)
    client.sendto(b"after the timeout", server.local_address)
    assert server.recvfrom(timeout=PATIENCE)[0] == b"after the timeout"


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_invalid_timeouts_are_rejected(sockets: Callable[..., UDPSocket], bad: float) -> None:
    server = sockets("127.0.0.1")
    with pytest.raises(ValueError, match="timeout"):
        server.recvfrom(timeout=bad)
    with pytest.raises(ValueError, match="timeout"):
        server.sendto(b"x", server.local_address, timeout=bad)


# --- close ------------------------------------------------------------------------------


def test_close_is_idempotent_and_use_after_close_raises() -> None:
    sock = open_udp("127.0.0.1")
    peer = open_udp("127.0.0.1")
    try:
        address = sock.local_address
        sock.close()
        sock.close()
        assert sock.fileno() == -1
        assert sock.local_address == address  # still known for reports
        with pytest.raises(ClosedResourceError):
            sock.recvfrom(timeout=0)
        with pytest.raises(ClosedResourceError):
            sock.recv(timeout=0)
        with pytest.raises(ClosedResourceError):
            sock.sendto(b"x", peer.local_address)
        with pytest.raises(ClosedResourceError):
            sock.send(b"x")
        # ClosedResourceError is an OSError with EBADF, like the stdlib's error.
        with pytest.raises(OSError) as caught:
            sock.recvfrom(timeout=0)
        assert caught.value.errno == errno.EBADF
        assert "closed" in repr(sock)
    finally:
        peer.close()


def test_context_manager_closes() -> None:
    with open_udp("127.0.0.1") as sock:
        assert sock.fileno() >= 0
    assert sock.fileno() == -1
    with pytest.raises(ClosedResourceError):
        sock.recvfrom(timeout=0)


def _blocked_in_poll(thread: threading.Thread) -> bool:
    """True once ``thread`` sleeps in poll(2)/ppoll(2) (Linux x86-64 /proc)."""
    text = Path(f"/proc/self/task/{thread.native_id}/syscall").read_text()
    return text.split()[0] in {"7", "271"}


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64",
    reason="detects a blocked thread through /proc/<tid>/syscall numbers of Linux x86-64",
)
def test_close_wakes_a_thread_blocked_in_recvfrom() -> None:
    sock = open_udp("127.0.0.1")
    outcome: list[BaseException | bytes] = []

    def receive() -> None:
        try:
            outcome.append(sock.recvfrom(timeout=30)[0])
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        deadline = time.monotonic() + PATIENCE
        while not _blocked_in_poll(thread):
            assert time.monotonic() < deadline, "the receiver never blocked"
            time.sleep(0.001)
        started = time.monotonic()
        sock.close()
        thread.join(PATIENCE)
        assert not thread.is_alive()
        assert time.monotonic() - started < PATIENCE
    finally:
        sock.close()
        thread.join(PATIENCE)
    assert len(outcome) == 1
    assert isinstance(outcome[0], ClosedResourceError)


# --- ICMP errors --------------------------------------------------------------------------


def test_connected_socket_reports_icmp_port_unreachable(
    sockets: Callable[..., UDPSocket], loopback: str
) -> None:
    port = _closed_port(loopback)
    client = sockets(remote=(loopback, port))
    client.send(b"anyone there?")
    with pytest.raises(ConnectionRefusedError):
        client.recv(timeout=PATIENCE)
    # The error was reported once; the socket is alive and keeps working.
    assert client.fileno() >= 0
    with pytest.raises(TimeoutError):
        client.recv(timeout=0.01)
    client.send(b"again")
    with pytest.raises(ConnectionRefusedError):
        client.recv(timeout=PATIENCE)


def test_unconnected_socket_does_not_see_icmp_errors(
    sockets: Callable[..., UDPSocket],
) -> None:
    port = _closed_port("127.0.0.1")
    client = sockets("127.0.0.1")
    client.sendto(b"into the void", ("127.0.0.1", port))
    with pytest.raises(TimeoutError):
        client.recvfrom(timeout=0.05)
    client.sendto(b"still fine", ("127.0.0.1", port))


# --- connected sockets ------------------------------------------------------------------


def test_connected_socket_addresses_and_filtering(
    sockets: Callable[..., UDPSocket], loopback: str
) -> None:
    server = sockets(loopback)
    stranger = sockets(loopback)
    client = sockets(remote=format_host_port(loopback, server.local_address.port))
    assert client.remote_address == server.local_address
    assert client.local_address.host == loopback
    assert server.remote_address is None
    # The kernel only delivers datagrams from the peer to a connected socket.
    stranger.sendto(b"not for you", client.local_address)
    server.sendto(b"for you", client.local_address)
    assert client.recvfrom(timeout=PATIENCE) == (b"for you", server.local_address)


def test_remote_with_local_host_and_port(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    port = _closed_port("127.0.0.1")
    client = sockets("127.0.0.1", port, remote=("127.0.0.1", server.local_address.port))
    assert client.local_address == SocketAddress(socket.AF_INET, "127.0.0.1", port)
    client.send(b"from a chosen port")
    assert server.recvfrom(timeout=PATIENCE) == (b"from a chosen port", client.local_address)


def test_remote_with_local_port_only(sockets: Callable[..., UDPSocket]) -> None:
    server = sockets("127.0.0.1")
    port = _closed_port("127.0.0.1")
    client = sockets(local_port=port, remote=("127.0.0.1", server.local_address.port))
    assert client.local_address.port == port


def test_send_on_unconnected_socket_is_refused(sockets: Callable[..., UDPSocket]) -> None:
    sock = sockets("127.0.0.1")
    with pytest.raises(OSError) as caught:
        sock.send(b"where to?")
    assert caught.value.errno == errno.EDESTADDRREQ


# --- dual stack and families ------------------------------------------------------------


def test_unconnected_default_socket_talks_to_ipv4_peer(
    sockets: Callable[..., UDPSocket],
) -> None:
    dual = sockets()
    peer = sockets("127.0.0.1")
    if HAS_IPV6:
        assert dual.local_address.family == socket.AF_INET6
        assert dual.local_address.host == "::"
    peer.sendto(b"hello dual", ("127.0.0.1", dual.local_address.port))
    data, sender = dual.recvfrom(timeout=PATIENCE)
    assert data == b"hello dual"
    # Reported as IPv4, not ::ffff:127.0.0.1.
    assert sender == SocketAddress(socket.AF_INET, "127.0.0.1", peer.local_address.port)
    dual.sendto(b"reply by address", sender)
    dual.sendto(b"reply by tuple", ("127.0.0.1", peer.local_address.port))
    assert peer.recvfrom(timeout=PATIENCE)[0] == b"reply by address"
    assert peer.recvfrom(timeout=PATIENCE)[0] == b"reply by tuple"


@needs_ipv6
def test_unconnected_default_socket_talks_to_ipv6_peer(
    sockets: Callable[..., UDPSocket],
) -> None:
    dual = sockets()
    peer = sockets("::1")
    peer.sendto(b"hello", ("::1", dual.local_address.port))
    data, sender = dual.recvfrom(timeout=PATIENCE)
    assert (data, sender) == (b"hello", peer.local_address)
    dual.sendto(b"back", sender)
    assert peer.recvfrom(timeout=PATIENCE)[0] == b"back"


def test_family_inet_gives_ipv4_wildcard(sockets: Callable[..., UDPSocket]) -> None:
    sock = sockets(family=socket.AF_INET)
    assert sock.local_address.family == socket.AF_INET
    assert sock.local_address.host == "0.0.0.0"
    if HAS_IPV6:
        with pytest.raises(AddressError, match="IPv4"):
            sock.sendto(b"x", SocketAddress(socket.AF_INET6, "::1", 9))


@needs_ipv6
def test_family_inet6_is_ipv6_only(sockets: Callable[..., UDPSocket]) -> None:
    sock = sockets(family=socket.AF_INET6)
    assert sock.local_address.family == socket.AF_INET6
    assert sock.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    with pytest.raises(AddressError, match="IPv6-only"):
        sock.sendto(b"x", SocketAddress(socket.AF_INET, "127.0.0.1", 9))


def test_reuse_port_lets_two_sockets_share_a_port(sockets: Callable[..., UDPSocket]) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("SO_REUSEPORT is not available")
    first = sockets("127.0.0.1", 0, reuse_port=True)
    second = sockets("127.0.0.1", first.local_address.port, reuse_port=True)
    assert second.local_address == first.local_address
    with pytest.raises(OSError) as caught:
        sockets("127.0.0.1", first.local_address.port)
    assert caught.value.errno == errno.EADDRINUSE
    assert "127.0.0.1:" in str(caught.value)


# --- validation before any lookup ---------------------------------------------------------


class _NoLookups:
    def getaddrinfo(self, *args: object, **kwargs: object) -> list[object]:
        raise AssertionError("a lookup happened before the input was checked")


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((), {"local_port": 65536}, AddressError),
        ((), {"local_port": -1}, AddressError),
        (("127.1",), {}, AddressError),
        (("0x7f.0.0.1",), {}, AddressError),
        ((), {"remote": ("127.0.0.1", 70000)}, AddressError),
        ((), {"remote": ("010.0.0.1", 53)}, AddressError),
        ((), {"remote": "no-port-here"}, AddressError),
        ((), {"remote": "unix:/tmp/x"}, AddressError),
        ((), {"remote": ("127.0.0.1", 53), "local_port": 99999}, AddressError),
        ((), {"family": socket.AF_UNIX}, ValueError),
        ((), {"local_port": True}, TypeError),
    ],
)
def test_input_is_checked_before_any_lookup(
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    error: type[Exception],
) -> None:
    monkeypatch.setattr(udp, "default_resolver", _NoLookups)
    with pytest.raises(error):
        open_udp(*args, **kwargs)  # type: ignore[arg-type]


def test_sendto_rejects_bad_addresses(sockets: Callable[..., UDPSocket]) -> None:
    sock = sockets("127.0.0.1")
    with pytest.raises(TypeError):
        sock.sendto(b"x", "127.0.0.1:9")
    with pytest.raises(TypeError):
        sock.sendto(b"x", ("127.0.0.1", 9, 0))
    with pytest.raises(AddressError):
        sock.sendto(b"x", ("127.0.0.1", 65536))
    with pytest.raises(AddressError):
        sock.sendto(b"x", ("127.1", 9))
    with pytest.raises(AddressError):
        sock.sendto(b"x", SocketAddress(socket.AF_UNIX, path="/tmp/x"))


def test_wrapping_requires_a_datagram_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        with pytest.raises(ValueError, match="SOCK_DGRAM"):
            UDPSocket(stream)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
        with pytest.raises(ValueError, match="AF_INET"):
            UDPSocket(unix)


def test_wrapping_an_existing_socket() -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    with UDPSocket(raw, timeout=0.01) as sock:
        assert sock.socket is raw
        assert sock.timeout == 0.01
        assert sock.local_address.port == raw.getsockname()[1]
        assert not raw.getblocking()
        with pytest.raises(TimeoutError):
            sock.recvfrom()
    assert raw.fileno() == -1
