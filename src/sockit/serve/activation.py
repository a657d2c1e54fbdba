"""Socket activation: serve sockets that a supervisor bound and handed to us.

Two conventions:

* **systemd** (``sd_listen_fds(3)``): the supervisor sets ``LISTEN_PID`` to our pid and
  ``LISTEN_FDS`` to the number of sockets passed, starting at fd 3
  (``SD_LISTEN_FDS_START``); ``LISTEN_FDNAMES`` optionally names them. The variables
  are checked against our pid (so a child we spawn does not take them for its own) and
  removed from the environment once read, as ``sd_listen_fds(unset_environment=1)`` does.
* **inetd**: fd 0 is the socket. In inetd's "wait" mode it is a *listening* socket
  and we accept from it; in "nowait" mode it is one already *connected* socket, and
  serving means handling exactly that connection.

Must never bind or listen itself: it only adopts what it was given, and it refuses
anything that is not a socket with a clear error.
"""

from __future__ import annotations

import os
import socket
import stat

from sockit.sync import SocketListener, SocketStream

__all__ = [
    "SD_LISTEN_FDS_START",
    "ActivationError",
    "inetd_socket",
    "systemd_listeners",
]

SD_LISTEN_FDS_START = 3
"""The first fd systemd passes (sd-daemon.h)."""


class ActivationError(RuntimeError):
    """The sockets handed in by the supervisor are missing or unusable."""


def systemd_listeners(*, unset_environment: bool = True) -> SocketListener | None:
    """Adopt the sockets systemd passed (``LISTEN_FDS``) as one listener.

    Returns ``None`` when this process was not socket-activated (no ``LISTEN_FDS``, or
    ``LISTEN_PID`` names another process). Every passed fd must be a listening stream
    socket; a datagram or connected socket raises :class:`ActivationError` (serve UDP
    with :func:`sockit.serve.serve_udp` and a socket of your own). With
    ``unset_environment`` the three variables are removed so children do not inherit
    them.
    """
    pid_text = os.environ.get("LISTEN_PID")
    count_text = os.environ.get("LISTEN_FDS")
    if not count_text:
        return None
    if pid_text is not None and pid_text != str(os.getpid()):
        return None
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    try:
        count = int(count_text)
    except ValueError:
        raise ActivationError(f"LISTEN_FDS is not a number: {count_text!r}") from None
    if count < 1:
        raise ActivationError(f"LISTEN_FDS={count}: no sockets were passed")
    sockets = [
        _adopt_listening(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    ]
    return SocketListener(sockets)


def inetd_socket(fd: int = 0) -> SocketListener | SocketStream:
    """Adopt the socket inetd put on ``fd`` (0 by default).

    Returns a :class:`SocketListener` for a listening socket (inetd "wait" mode) or a
    :class:`SocketStream` for a connected one ("nowait" mode). The fd itself is taken
    over: closing the result closes it. Raises :class:`ActivationError` if the fd is
    not a stream socket.
    """
    sock = _socket_from_fd(fd)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ActivationError(f"fd {fd} is not a stream socket")
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return SocketListener([sock])
    return SocketStream(sock)


def _adopt_listening(fd: int) -> socket.socket:
    sock = _socket_from_fd(fd)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise ActivationError(f"fd {fd} is not a listening stream socket")
    return sock


def _socket_from_fd(fd: int) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as error:
        raise ActivationError(f"fd {fd} was not passed to this process: {error}") from error
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"fd {fd} is not a socket")
    # socket.socket(fileno=...) reads family, type and protocol from the kernel.
    sock = socket.socket(fileno=fd)
    os.set_inheritable(fd, False)  # our own children must not inherit the listener
    return sock
