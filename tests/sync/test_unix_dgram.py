"""UNIX datagram sockets (sockit.sync.udp.open_unix_datagram) over real sockets."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sockit.addr import SocketAddress
from sockit.errors import (
    AddressError,
    ClosedResourceError,
    DatagramTooLarge,
    DatagramTruncated,
)
from sockit.sync.udp import UnixDatagramSocket, open_unix_datagram

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PATIENCE = 5.0

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract UNIX names exist only on Linux"
)


@pytest.fixture
def unix() -> Iterator[Callable[..., UnixDatagramSocket]]:
    """A factory for open_unix_datagram() whose sockets are closed at teardown."""
    with ExitStack() as stack:

        def make(*args: object, **kwargs: object) -> UnixDatagramSocket:
            return stack.enter_context(open_unix_datagram(*args, **kwargs))  # type: ignore[arg-type]

        yield make


def _abstract_name() -> str:
    return f"@sockit-test-{os.getpid()}-{secrets.token_hex(8)}"


def _stale_socket_file(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(path))


# --- datagrams --------------------------------------------------------------------------


def test_round_trip_with_autobound_client(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "server.sock")
    server = unix(path)
    client = unix()
    assert server.local_address == SocketAddress(socket.AF_UNIX, path=path)
    if sys.platform.startswith("linux"):
        # Autobind gave the client an abstract name, so replies can reach it.
        assert client.local_address.is_abstract
    client.sendto(b"request", path)
    data, sender = server.recvfrom(timeout=PATIENCE)
    assert data == b"request"
    assert sender == client.local_address
    server.sendto(b"reply", sender)
    assert client.recvfrom(timeout=PATIENCE) == (b"reply", server.local_address)


def test_zero_length_datagram_is_data(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    client = unix(remote=path)
    client.send(b"")
    client.send(b"then data")
    assert server.recvfrom(timeout=PATIENCE) == (b"", client.local_address)
    assert server.recv(timeout=PATIENCE) == b"then data"


def test_truncation_is_reported(unix: Callable[..., UnixDatagramSocket], tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    client = unix()
    payload = os.urandom(2000)
    client.sendto(payload, path)
    client.sendto(b"next", path)
    with pytest.raises(DatagramTruncated) as caught:
        server.recvfrom(100, timeout=PATIENCE)
    assert caught.value.size == 2000
    assert caught.value.data == payload[:100]
    assert caught.value.address == client.local_address
    assert server.recvfrom(100, timeout=PATIENCE)[0] == b"next"


def test_large_datagram_within_the_send_buffer(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    client = unix(remote=path)
    payload = os.urandom(100_000)  # more than any UDP datagram: UNIX sockets allow it
    client.send(payload)
    assert server.recv(200_000, timeout=PATIENCE) == payload


def test_kernel_emsgsize_becomes_datagram_too_large(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    client = unix(remote=path)
    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with pytest.raises(DatagramTooLarge) as caught:
        client.send(b"x" * 100_000)
    assert caught.value.size == 100_000
    assert caught.value.limit is None
    assert caught.value.errno == errno.EMSGSIZE
    assert isinstance(caught.value.__cause__, OSError)
    client.send(b"small is fine")
    assert server.recv(timeout=PATIENCE) == b"small is fine"


# --- abstract names -----------------------------------------------------------------------


@linux_only
def test_abstract_server(unix: Callable[..., UnixDatagramSocket], tmp_path: Path) -> None:
    name = _abstract_name()
    server = unix(name)
    client = unix(remote=name)
    assert server.local_address.path == name
    assert server.path_owner is None
    assert client.remote_address == SocketAddress(socket.AF_UNIX, path=name)
    client.send(b"abstract")
    data, sender = server.recvfrom(timeout=PATIENCE)
    assert data == b"abstract"
    server.sendto(b"back", sender)
    assert client.recv(timeout=PATIENCE) == b"back"
    assert list(tmp_path.iterdir()) == []


@linux_only
def test_abstract_name_in_use(unix: Callable[..., UnixDatagramSocket]) -> None:
    name = _abstract_name()
    unix(name)
    with pytest.raises(OSError) as caught:
        unix(name)
    assert caught.value.errno == errno.EADDRINUSE


# --- the socket file --------------------------------------------------------------------


def test_close_removes_our_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    sock = open_unix_datagram(str(path))
    assert stat.S_ISSOCK(path.lstat().st_mode)
    sock.close()
    assert not path.exists()
    sock.close()  # idempotent
    with pytest.raises(ClosedResourceError):
        sock.recvfrom(timeout=0)
    with pytest.raises(ClosedResourceError):
        sock.sendto(b"x", str(path))


def test_close_keeps_a_file_that_replaced_ours(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    first = open_unix_datagram(str(path))
    try:
        path.unlink()
        with open_unix_datagram(str(path)) as second:
            first.close()
            assert stat.S_ISSOCK(path.lstat().st_mode)
            # ... and it is still the second server's live socket.
            with open_unix_datagram(remote=str(path)) as client:
                client.send(b"to the second")
                assert second.recv(timeout=PATIENCE) == b"to the second"
        assert not path.exists()
    finally:
        first.close()


def test_stale_file_is_replaced(unix: Callable[..., UnixDatagramSocket], tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    _stale_socket_file(path)
    server = unix(str(path))
    client = unix(remote=str(path))
    client.send(b"hello new server")
    assert server.recv(timeout=PATIENCE) == b"hello new server"


def test_path_in_use_is_refused(unix: Callable[..., UnixDatagramSocket], tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    with pytest.raises(OSError, match="server is running") as caught:
        unix(path)
    assert caught.value.errno == errno.EADDRINUSE
    client = unix(remote=path)
    client.send(b"the first server is untouched")
    assert server.recv(timeout=PATIENCE) == b"the first server is untouched"


def test_regular_file_is_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"keep")
    with pytest.raises(OSError, match="not a socket") as caught:
        open_unix_datagram(str(path))
    assert caught.value.errno == errno.EADDRINUSE
    assert path.read_bytes() == b"keep"


def test_mode_is_applied_and_the_real_name_reaches_peers(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "private.sock")
    server = unix(path, mode=0o600)
    assert stat.S_IMODE(Path(path).lstat().st_mode) == 0o600
    assert server.local_address.path == path
    peer_path = str(tmp_path / "peer.sock")
    peer = unix(peer_path)
    server.sendto(b"who am I?", peer_path)
    data, sender = peer.recvfrom(timeout=PATIENCE)
    assert data == b"who am I?"
    if sys.platform.startswith("linux"):
        # The peer can reply to the address it saw.
        assert sender.path == path
        peer.sendto(b"you are private.sock", sender)
        assert server.recv(timeout=PATIENCE) == b"you are private.sock"


def test_mode_needs_a_filesystem_path() -> None:
    with pytest.raises(ValueError, match="mode"):
        open_unix_datagram(mode=0o600)
    with pytest.raises(ValueError, match="mode"):
        open_unix_datagram(_abstract_name(), mode=0o600)


def test_path_too_long(tmp_path: Path) -> None:
    too_long = str(tmp_path / ("x" * 120))
    with pytest.raises(AddressError, match="at most 107"):
        open_unix_datagram(too_long)
    with pytest.raises(AddressError, match="at most 107"):
        open_unix_datagram(remote=too_long)
    assert list(tmp_path.iterdir()) == []


# --- errors -----------------------------------------------------------------------------


def test_sending_to_nothing(unix: Callable[..., UnixDatagramSocket], tmp_path: Path) -> None:
    client = unix()
    with pytest.raises(FileNotFoundError):
        client.sendto(b"x", str(tmp_path / "missing.sock"))
    stale = tmp_path / "stale.sock"
    _stale_socket_file(stale)
    with pytest.raises(ConnectionRefusedError):
        client.sendto(b"x", str(stale))
    with pytest.raises(FileNotFoundError):
        open_unix_datagram(remote=str(tmp_path / "missing.sock"))


def test_unnamed_sender_cannot_be_replied_to(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path
) -> None:
    path = str(tmp_path / "s.sock")
    server = unix(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unnamed:
        unnamed.sendto(b"anonymous", path)
    data, sender = server.recvfrom(timeout=PATIENCE)
    assert data == b"anonymous"
    assert sender == SocketAddress(socket.AF_UNIX, path="")
    assert str(sender) == "unix:(unnamed)"
    with pytest.raises(AddressError, match="unnamed"):
        server.sendto(b"reply", sender)


def test_bad_destinations(unix: Callable[..., UnixDatagramSocket]) -> None:
    sock = unix()
    with pytest.raises(TypeError):
        sock.sendto(b"x", ("127.0.0.1", 9))
    with pytest.raises(AddressError):
        sock.sendto(b"x", SocketAddress(socket.AF_INET, "127.0.0.1", 9))
    with pytest.raises(AddressError):
        sock.sendto(b"x", "")
    with pytest.raises(OSError) as caught:
        sock.send(b"unconnected")
    assert caught.value.errno == errno.EDESTADDRREQ


def test_recv_timeout(unix: Callable[..., UnixDatagramSocket]) -> None:
    sock = unix()
    with pytest.raises(TimeoutError):
        sock.recvfrom(timeout=0.02)
    sock.timeout = 0
    with pytest.raises(TimeoutError):
        sock.recv()


def _fill_queue(sender: UnixDatagramSocket, destination: str | None) -> int:
    """Send until the receiver's queue is full; return how many were queued."""
    for count in range(100_000):
        try:
            if destination is None:
                sender.send(b"q", timeout=0)
            else:
                sender.sendto(b"q", destination, timeout=0)
        except TimeoutError:
            return count
    raise AssertionError("the receiver's queue never filled")


@pytest.mark.parametrize("connected", [True, False], ids=["connected", "unconnected"])
def test_send_to_a_full_receiver_times_out(
    unix: Callable[..., UnixDatagramSocket], tmp_path: Path, connected: bool
) -> None:
    path = str(tmp_path / "slow.sock")
    receiver = unix(path)
    sender = unix(remote=path) if connected else unix()
    destination = None if connected else path
    queued = _fill_queue(sender, destination)
    assert queued > 0

    def send(data: bytes, timeout: float) -> None:
        if destination is None:
            sender.send(data, timeout=timeout)
        else:
            sender.sendto(data, destination, timeout=timeout)

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0\.05 s"):
        send(b"one too many", 0.05)
    assert 0.05 <= time.monotonic() - started < PATIENCE
    # Reliable: nothing was dropped, and once there is room sending works again.
    assert receiver.recv(timeout=PATIENCE) == b"q"
    send(b"fits again", PATIENCE)
    received = [receiver.recv(timeout=PATIENCE) for _ in range(queued)]
    assert received == [b"q"] * (queued - 1) + [b"fits again"]


def test_wrapping_requires_af_unix() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inet:
        with pytest.raises(ValueError, match="AF_UNIX"):
            UnixDatagramSocket(inet)
