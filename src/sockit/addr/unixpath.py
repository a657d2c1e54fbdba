"""The UNIX socket file rules, shared by stream and datagram UNIX sockets, sync and async.

It lives in ``addr/`` because these rules are the filesystem side of a UNIX endpoint and
both ``sync/`` and ``aio/`` need them (they may not import each other). It is the one
module of ``addr/`` that touches sockets, and only to probe and bind a path it is given.

* ``"@name"`` is a Linux abstract-namespace name: nothing is created on disk.
* An existing file at the path is replaced only if it is a socket *and* a probing
  connect to it is refused (``ECONNREFUSED``: nobody is bound there any more, the file
  is a leftover of a process that did not clean up). A live socket is refused with
  ``EADDRINUSE``; anything that is not a socket (regular file, directory, symlink) is
  refused and left alone.
* ``mode=`` is applied atomically: the socket file never exists under its final name
  with a more permissive mode.
* The file we create is removed by :meth:`UnixPathOwner.remove`, and only if the path
  still refers to the very file we created.
* A path longer than ``sun_path`` is an :class:`~sockit.errors.AddressError` before
  anything is touched.

This module must never delete a file that is not a socket, never delete a socket file
that a probe could connect to, and never delete a file that it did not create unless
that file was proven stale.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sockit.addr.endpoint import UnixEndpoint
from sockit.errors import AddressError

__all__ = ["SUN_PATH_MAX", "UnixPathOwner", "bind_unix", "check_unix_path", "unix_sockaddr"]

SUN_PATH_MAX = 108 if sys.platform.startswith("linux") else 104
"""Size of ``sockaddr_un.sun_path``: 108 bytes on Linux (unix(7)), 104 on the BSDs and
macOS (unix(4)). A filesystem path needs one of them for its terminating NUL, an
abstract name one for its leading NUL."""

# How long the staleness probe may take. A dgram connect and a stream connect to a
# stale file answer at once (ECONNREFUSED); a live stream server with a full accept
# queue makes a blocking connect wait, which is bounded here (and then counts as live).
_PROBE_TIMEOUT = 1.0

# Linux creates the socket file with the mode of the socket's inode (minus umask).
_MODE_BEFORE_BIND = sys.platform.startswith("linux")
_MODE_BITS = 0o7777

# Temporary names for the mode= rename dance: collisions are astronomically unlikely with 48
# random bits, but the loop stays bounded anyway.
_TEMPORARY_NAME_ATTEMPTS = 10
_TEMPORARY_RANDOM_BYTES = 6


def check_unix_path(path: str) -> None:
    """Raise :class:`~sockit.errors.AddressError` if ``path`` cannot be a UNIX address.

    Empty paths, NUL bytes, abstract names off Linux and paths longer than
    ``SUN_PATH_MAX - 1`` bytes (107 on Linux) are refused, with a message naming the
    limit; CPython would otherwise fail later with a bare ``OSError("AF_UNIX path too
    long")``, or silently bind a truncated name on some systems. The rules live in
    :class:`~sockit.addr.UnixEndpoint`, so parsing and binding agree.
    """
    UnixEndpoint(path)


def unix_sockaddr(path: str) -> str | bytes:
    """The argument for ``bind``/``connect``/``sendto`` for ``path``.

    ``"@name"`` becomes ``bytes`` with a leading NUL (the abstract namespace), a
    filesystem path stays a ``str``. Checked by :func:`check_unix_path` first.
    """
    check_unix_path(path)
    if path.startswith("@"):
        return b"\0" + path[1:].encode("utf-8", "surrogateescape")
    return path


@dataclass
class UnixPathOwner:
    """Proof that we created the socket file at ``path``: its ``(st_dev, st_ino)``.

    :meth:`remove` unlinks the path only while it still refers to that very file, so a
    socket file that another process put there after ours (say, a new server that
    replaced our file once we looked stale to it) is never deleted.

    Call :meth:`remove` *before* closing the socket: a bound socket pins its file's
    inode, so while it is open the inode number cannot be reused by a file someone
    else creates (file systems such as ext4 reuse freed numbers at once). As a second
    line of defence the inode change time is compared too: a file created later has a
    later ``st_ctime_ns``. If someone ``chmod``-s our file, that changes as well and
    the file is left behind, which is the safe side (the next bind finds it stale and
    replaces it).
    """

    path: str
    device: int
    inode: int
    change_time_ns: int = 0
    _removed: bool = field(default=False, repr=False)

    @classmethod
    def for_path(cls, path: str) -> UnixPathOwner:
        """Record the file now at ``path`` (call once it has its final name and mode)."""
        info = os.lstat(path)
        return cls(path, info.st_dev, info.st_ino, info.st_ctime_ns)

    def owns_current_file(self) -> bool:
        """True if ``path`` still names the file we created."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino, info.st_ctime_ns) == (
            self.device,
            self.inode,
            self.change_time_ns,
        )

    def remove(self) -> bool:
        """Unlink our socket file. Idempotent; returns True if this call removed it.

        A missing file (someone removed it already) is fine. There is a window between
        the ``lstat`` and the ``unlink`` that no portable call closes (there is no
        "unlink if inode is"), but it is only open to a process that replaces the file
        in those microseconds.
        """
        if self._removed:
            return False
        self._removed = True
        if not self.owns_current_file():
            return False
        try:
            Path(self.path).unlink()
        except FileNotFoundError:
            return False
        return True


def bind_unix(sock: socket.socket, path: str, *, mode: int | None = None) -> UnixPathOwner | None:
    """Bind the AF_UNIX socket ``sock`` to ``path`` under the rules of this module.

    Returns the :class:`UnixPathOwner` of the created file, or ``None`` for an abstract
    name (``"@name"``), which leaves nothing on disk.

    Raises :class:`~sockit.errors.AddressError` for a path that is empty or too long
    (before anything is touched), ``OSError(EADDRINUSE)`` if a live socket is bound
    there (a probing connect succeeded) or if the path exists and is not a socket (it
    is left alone), ``ValueError`` for a ``mode`` outside ``0..0o7777`` or with an
    abstract name, and whatever ``bind``/``chmod``/``rename`` raise otherwise.

    ``mode`` (for example ``0o660``) is the permission of the socket file, applied so
    that no client can ever reach the socket under ``path`` with a more permissive
    mode than asked for:

    * On Linux, the socket's own inode is ``fchmod``-ed before ``bind``; the kernel
      creates the file with that mode minus the umask (``unix_bind_bsd`` in
      net/unix/af_unix.c), and a ``chmod`` afterwards adds back bits the umask
      removed. The socket keeps its real name, so ``getsockname()`` and the sender
      address datagram peers see (and reply to) are ``path``.
    * Elsewhere, the socket is bound to a temporary name in the same directory,
      ``chmod``-ed, and ``rename``-d onto ``path`` (atomic). The kernel remembers the
      temporary name, so ``getsockname()`` reports it (sockit's ``local_address``
      reports ``path``).

    Not ``umask``: it is process-wide, so changing it around ``bind`` would race with
    every other thread creating files at that moment.
    """
    check_unix_path(path)
    if mode is not None and not (isinstance(mode, int) and 0 <= mode <= _MODE_BITS):
        raise ValueError(f"mode must be an int in 0..0o7777, not {mode!r}")
    if path.startswith("@"):
        if mode is not None:
            raise ValueError("mode= applies to filesystem UNIX sockets, not abstract names")
        _bind_or_explain(sock, path)
        return None
    _clear_stale(path, sock.type)
    if mode is None:
        _bind_or_explain(sock, path)
        return UnixPathOwner.for_path(path)
    if _MODE_BEFORE_BIND:
        return _bind_with_mode_set_first(sock, path, mode)
    return _bind_with_mode_by_rename(sock, path, mode)


def _bind_with_mode_set_first(sock: socket.socket, path: str, mode: int) -> UnixPathOwner:
    os.fchmod(sock.fileno(), mode)
    _bind_or_explain(sock, path)
    owner = UnixPathOwner.for_path(path)
    try:
        if stat.S_IMODE(os.lstat(path).st_mode) != mode:
            # The umask took bits away; the file is only ever *less* permissive than
            # asked until this chmod, never more.
            Path(path).chmod(mode)
            owner = UnixPathOwner.for_path(path)  # chmod changed st_ctime
    except BaseException:
        owner.remove()
        raise
    return owner


def _bind_with_mode_by_rename(sock: socket.socket, path: str, mode: int) -> UnixPathOwner:
    temporary = _bind_temporary(sock, path)
    try:
        Path(temporary).chmod(mode)
        # rename(2) would also silently replace a regular file that appeared at the
        # path since _clear_stale looked; look again right before (the remaining
        # window is microseconds, and only another local process can use it).
        _refuse_non_socket(path)
        Path(temporary).rename(path)
    except BaseException:
        _unlink_quietly(temporary)
        raise
    return UnixPathOwner.for_path(path)


def _clear_stale(path: str, sock_type: int) -> None:
    """Remove ``path`` if it is a stale socket file; raise if it is anything else."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise _not_a_socket(path, info.st_mode)
    probe_error = _probe(path, sock_type)
    if probe_error is None:
        raise OSError(
            errno.EADDRINUSE,
            "a server is running on this UNIX socket (a probing connect succeeded); "
            "stop it or choose another path",
            path,
        )
    if probe_error.errno == errno.ENOENT:
        return  # removed between lstat and probe: nothing left to clear
    if probe_error.errno != errno.ECONNREFUSED:
        # EAGAIN (a stream server whose accept queue is full), EPROTOTYPE (a server of
        # the other socket type), EACCES...: someone may well be alive there.
        raise OSError(
            errno.EADDRINUSE,
            f"UNIX socket file exists and a probing connect failed with "
            f"{errno.errorcode.get(probe_error.errno or 0, probe_error.errno)} "
            f"({probe_error.strerror}), so it is not provably stale; left alone",
            path,
        ) from probe_error
    # Refused: nobody is bound to it. Unlink only the very file we probed.
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return
    if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
        raise OSError(
            errno.EADDRINUSE,
            "the UNIX socket file was replaced while checking whether it is stale; left alone",
            path,
        )
    _unlink_quietly(path)


def _probe(path: str, sock_type: int) -> OSError | None:
    """Connect to ``path`` with a socket of ``sock_type``; the error, or None if live."""
    probe = socket.socket(socket.AF_UNIX, sock_type)
    try:
        probe.settimeout(_PROBE_TIMEOUT)
        probe.connect(path)
    except OSError as error:
        return error
    finally:
        probe.close()
    return None


def _bind_or_explain(sock: socket.socket, path: str) -> None:
    try:
        sock.bind(unix_sockaddr(path))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        if path.startswith("@"):
            reason = "another socket is bound to this abstract name"
        else:
            reason = "another process created a file at this UNIX socket path just now"
        raise OSError(errno.EADDRINUSE, reason, path) from error


def _bind_temporary(sock: socket.socket, path: str) -> str:
    """Bind ``sock`` to a fresh, unused name next to ``path``; return that name."""
    # Same directory, so rename(2) stays within one filesystem (and is atomic).
    directory, slash, _ = path.rpartition("/")
    prefix = directory + slash + "."
    for _ in range(_TEMPORARY_NAME_ATTEMPTS):
        candidate = prefix + secrets.token_hex(_TEMPORARY_RANDOM_BYTES) + ".sock-tmp"
        if len(os.fsencode(candidate)) + 1 > SUN_PATH_MAX:
            # The final path fits but the temporary one does not: shorten the suffix.
            candidate = prefix + secrets.token_hex(_TEMPORARY_RANDOM_BYTES)
        if len(os.fsencode(candidate)) + 1 > SUN_PATH_MAX:
            raise AddressError(
                f"no room for the temporary name that mode= needs next to {path!r} "
                f"within the {SUN_PATH_MAX - 1}-byte UNIX path limit; use a shorter path"
            )
        try:
            sock.bind(candidate)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        return candidate
    raise OSError(
        errno.EADDRINUSE,
        f"{_TEMPORARY_NAME_ATTEMPTS} random temporary names for mode= were all taken",
        path,
    )


def _refuse_non_socket(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise _not_a_socket(path, info.st_mode)


def _not_a_socket(path: str, st_mode: int) -> OSError:
    kind = _describe_file_type(st_mode)
    return OSError(
        errno.EADDRINUSE,
        f"the path exists and is {kind}, not a socket; it was left alone "
        f"(remove it yourself or choose another path)",
        path,
    )


def _describe_file_type(st_mode: int) -> str:
    if stat.S_ISREG(st_mode):
        return "a regular file"
    if stat.S_ISDIR(st_mode):
        return "a directory"
    if stat.S_ISLNK(st_mode):
        return "a symbolic link"
    if stat.S_ISFIFO(st_mode):
        return "a FIFO"
    return "a special file"


def _unlink_quietly(path: str) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
