"""The UNIX socket file rules (sockit.addr.unixpath), on real sockets in tmp_path."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
import sys
from typing import TYPE_CHECKING, Protocol

import pytest

from sockit.addr import unixpath as _unixpath
from sockit.addr.unixpath import SUN_PATH_MAX, UnixPathOwner, bind_unix
from sockit.errors import AddressError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract UNIX names exist only on Linux"
)


class SocketMaker(Protocol):
    def __call__(self, sock_type: int = socket.SOCK_DGRAM) -> socket.socket: ...


SOCKET_TYPES = [
    pytest.param(socket.SOCK_STREAM, id="stream"),
    pytest.param(socket.SOCK_DGRAM, id="dgram"),
]


@pytest.fixture
def new_socket() -> Iterator[SocketMaker]:
    """``new_socket(type)`` makes an AF_UNIX socket that is closed at teardown."""
    made: list[socket.socket] = []

    def make(sock_type: int = socket.SOCK_DGRAM) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, sock_type)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def _stale_socket_file(path: Path, sock_type: int) -> None:
    """A socket file whose socket is gone: closed without unlinking, as after a crash."""
    with socket.socket(socket.AF_UNIX, sock_type) as dead:
        dead.bind(str(path))
    assert stat.S_ISSOCK(path.lstat().st_mode)


def _unique_abstract_name() -> str:
    return f"@sockit-test-{os.getpid()}-{secrets.token_hex(8)}"


# --- abstract names -------------------------------------------------------------------


@linux_only
def test_abstract_name_creates_no_file(
    new_socket: SocketMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    name = _unique_abstract_name()
    sock = new_socket(socket.SOCK_DGRAM)
    assert bind_unix(sock, name) is None
    assert sock.getsockname() == b"\0" + name[1:].encode()
    assert list(tmp_path.iterdir()) == []
    # It is reachable under that name.
    client = new_socket(socket.SOCK_DGRAM)
    client.sendto(b"hi", b"\0" + name[1:].encode())
    assert sock.recv(10) == b"hi"


@linux_only
def test_abstract_name_in_use_is_refused(new_socket: SocketMaker) -> None:
    name = _unique_abstract_name()
    bind_unix(new_socket(socket.SOCK_DGRAM), name)
    with pytest.raises(OSError, match="abstract name") as caught:
        bind_unix(new_socket(socket.SOCK_DGRAM), name)
    assert caught.value.errno == errno.EADDRINUSE


def test_mode_with_abstract_name_is_rejected(new_socket: SocketMaker) -> None:
    with pytest.raises(ValueError, match="abstract"):
        bind_unix(new_socket(), _unique_abstract_name(), mode=0o600)


# --- stale files, live sockets, and files that are not sockets ------------------------


@pytest.mark.parametrize("sock_type", SOCKET_TYPES)
def test_stale_socket_file_is_replaced(
    new_socket: SocketMaker, tmp_path: Path, sock_type: int
) -> None:
    path = tmp_path / "stale.sock"
    _stale_socket_file(path, sock_type)
    sock = new_socket(sock_type)
    owner = bind_unix(sock, str(path))
    assert owner is not None
    assert owner.owns_current_file()
    # The new file is live: a client reaches the new socket through it.
    if sock_type == socket.SOCK_STREAM:
        sock.listen()
        client = new_socket(socket.SOCK_STREAM)
        client.connect(str(path))
    else:
        client = new_socket(socket.SOCK_DGRAM)
        client.sendto(b"fresh", str(path))
        assert sock.recv(10) == b"fresh"


@pytest.mark.parametrize("sock_type", SOCKET_TYPES)
def test_live_socket_is_refused_and_kept(
    new_socket: SocketMaker, tmp_path: Path, sock_type: int
) -> None:
    path = tmp_path / "live.sock"
    live = new_socket(sock_type)
    live.bind(str(path))
    if sock_type == socket.SOCK_STREAM:
        live.listen()
    inode = path.lstat().st_ino
    with pytest.raises(OSError, match="server is running") as caught:
        bind_unix(new_socket(sock_type), str(path))
    assert caught.value.errno == errno.EADDRINUSE
    assert caught.value.filename == str(path)
    assert path.lstat().st_ino == inode
    # The live server still works.
    if sock_type == socket.SOCK_DGRAM:
        client = new_socket(socket.SOCK_DGRAM)
        client.sendto(b"still here", str(path))
        assert live.recv(20) == b"still here"


def test_live_socket_of_the_other_type_is_refused(new_socket: SocketMaker, tmp_path: Path) -> None:
    # A datagram probe of a stream listener fails with EPROTOTYPE, not ECONNREFUSED:
    # someone is alive there, so the file must stay.
    path = tmp_path / "stream.sock"
    listener = new_socket(socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    with pytest.raises(OSError, match="not provably stale") as caught:
        bind_unix(new_socket(socket.SOCK_DGRAM), str(path))
    assert caught.value.errno == errno.EADDRINUSE
    assert stat.S_ISSOCK(path.lstat().st_mode)


def test_regular_file_is_never_deleted(new_socket: SocketMaker, tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_bytes(b"do not delete me")
    for mode in (None, 0o600):
        with pytest.raises(OSError, match="regular file, not a socket") as caught:
            bind_unix(new_socket(), str(path), mode=mode)
        assert caught.value.errno == errno.EADDRINUSE
        assert "left alone" in str(caught.value)
        assert path.read_bytes() == b"do not delete me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink-to-stale-socket", "dangling"])
def test_other_non_sockets_are_left_alone(
    new_socket: SocketMaker, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "thing"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-to-stale-socket":
        target = tmp_path / "target.sock"
        _stale_socket_file(target, socket.SOCK_DGRAM)
        path.symlink_to(target)
    else:
        path.symlink_to(tmp_path / "nowhere")
    before = path.lstat()
    with pytest.raises(OSError, match="not a socket") as caught:
        bind_unix(new_socket(), str(path))
    assert caught.value.errno == errno.EADDRINUSE
    after = path.lstat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)


# --- mode= ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o660, 0o666, 0o700])
def test_mode_is_applied(new_socket: SocketMaker, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "moded.sock"
    sock = new_socket()
    owner = bind_unix(sock, str(path), mode=mode)
    assert owner is not None
    info = path.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == mode
    assert owner.owns_current_file()
    # Nothing else (no temporary name) is left in the directory.
    assert [p.name for p in tmp_path.iterdir()] == ["moded.sock"]


def test_mode_wider_than_umask_is_applied(new_socket: SocketMaker, tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        path = tmp_path / "wide.sock"
        bind_unix(new_socket(), str(path), mode=0o666)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o666


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sets mode before bind")
def test_mode_keeps_the_real_name_on_linux(new_socket: SocketMaker, tmp_path: Path) -> None:
    path = tmp_path / "named.sock"
    sock = new_socket()
    bind_unix(sock, str(path), mode=0o600)
    assert sock.getsockname() == str(path)


def test_mode_by_rename_strategy(new_socket: SocketMaker, tmp_path: Path) -> None:
    # The portable strategy (used off Linux): temporary name, chmod, atomic rename.
    path = tmp_path / "renamed.sock"
    _stale_socket_file(path, socket.SOCK_DGRAM)
    sock = new_socket()
    _unixpath._clear_stale(str(path), socket.SOCK_DGRAM)
    owner = _unixpath._bind_with_mode_by_rename(sock, str(path), 0o640)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o640
    assert owner.inode == path.lstat().st_ino
    assert [p.name for p in tmp_path.iterdir()] == ["renamed.sock"]
    client = new_socket()
    client.sendto(b"via rename", str(path))
    assert sock.recv(20) == b"via rename"


def test_mode_by_rename_never_replaces_a_regular_file(
    new_socket: SocketMaker, tmp_path: Path
) -> None:
    path = tmp_path / "appeared.txt"
    path.write_bytes(b"arrived late")
    with pytest.raises(OSError, match="not a socket"):
        _unixpath._bind_with_mode_by_rename(new_socket(), str(path), 0o600)
    assert path.read_bytes() == b"arrived late"
    # The temporary socket file was cleaned up.
    assert [p.name for p in tmp_path.iterdir()] == ["appeared.txt"]


@pytest.mark.parametrize("mode", [-1, 0o10000, "0600"])
def test_invalid_mode_is_rejected(new_socket: SocketMaker, tmp_path: Path, mode: object) -> None:
    with pytest.raises(ValueError, match="mode"):
        bind_unix(new_socket(), str(tmp_path / "x.sock"), mode=mode)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# --- path length ------------------------------------------------------------------------


def test_path_too_long_is_an_address_error(new_socket: SocketMaker, tmp_path: Path) -> None:
    limit = SUN_PATH_MAX - 1
    directory = str(tmp_path) + "/"
    fits = directory + "f" * (limit - len(directory))
    too_long = fits + "g"
    assert len(fits.encode()) == limit
    with pytest.raises(AddressError, match=f"at most {limit}"):
        bind_unix(new_socket(), too_long)
    with pytest.raises(AddressError, match=f"at most {limit}"):
        bind_unix(new_socket(), too_long, mode=0o600)
    assert list(tmp_path.iterdir()) == []
    # One byte less fits (the limit is exact).
    assert bind_unix(new_socket(), fits) is not None


@linux_only
def test_abstract_name_too_long_is_an_address_error(new_socket: SocketMaker) -> None:
    with pytest.raises(AddressError, match="at most 107"):
        bind_unix(new_socket(), "@" + "a" * 108)
    assert bind_unix(new_socket(), "@" + secrets.token_hex(53) + "b") is None


def test_empty_path_is_an_address_error(new_socket: SocketMaker) -> None:
    with pytest.raises(AddressError, match="empty"):
        bind_unix(new_socket(), "")
    with pytest.raises(AddressError, match="empty"):
        bind_unix(new_socket(), "@")


# --- the owner --------------------------------------------------------------------------


def test_owner_removes_our_file_once(new_socket: SocketMaker, tmp_path: Path) -> None:
    path = tmp_path / "owned.sock"
    owner = bind_unix(new_socket(), str(path))
    assert owner is not None
    assert owner.owns_current_file()
    assert owner.remove() is True
    assert not path.exists()
    assert owner.remove() is False  # idempotent


def test_owner_tolerates_a_missing_file(new_socket: SocketMaker, tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    owner = bind_unix(new_socket(), str(path))
    assert owner is not None
    path.unlink()
    assert owner.remove() is False


def test_owner_never_removes_a_replaced_file(new_socket: SocketMaker, tmp_path: Path) -> None:
    path = tmp_path / "shared.sock"
    owner = bind_unix(new_socket(), str(path))
    assert owner is not None
    # Someone else removes our file and puts their own socket (or anything) there.
    path.unlink()
    other = new_socket()
    other.bind(str(path))
    other_inode = path.lstat().st_ino
    assert not owner.owns_current_file()
    assert owner.remove() is False
    assert path.lstat().st_ino == other_inode
    path.unlink()
    path.write_bytes(b"a regular file now")
    assert owner.remove() is False
    assert path.read_bytes() == b"a regular file now"


def test_owner_for_path_records_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    owner = UnixPathOwner.for_path(str(path))
    info = path.lstat()
    assert (owner.device, owner.inode, owner.change_time_ns, owner.path) == (
        info.st_dev,
        info.st_ino,
        info.st_ctime_ns,
        str(path),
    )
