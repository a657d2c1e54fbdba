"""What to do when accept(2) fails: the accept-errno policy, as a pure function.

The research behind it (the same literature trio's ``_highlevel_socket.py`` reviews):

* ``ECONNABORTED``, ``EPROTO``: the connection died in the accept queue (a client sent
  RST before we accepted); ``EPERM``: a firewall rule refused it (Linux); ``EAGAIN``:
  another process or thread took it; ``EINTR``: a signal. None of them says anything
  about the listening socket: try again at once.
* Linux also passes errors of the *new* socket up through accept (``ENETDOWN``,
  ``ENOPROTOOPT``, ``EHOSTDOWN``, ``ENONET``, ``EHOSTUNREACH``, ``EOPNOTSUPP``,
  ``ENETUNREACH``; see accept(2), "Error handling"): also transient.
* ``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``: we are out of a resource. Retrying at
  once spins at 100 % CPU with the connection still queued, so back off (and log at most
  once in a while); service resumes by itself when the resource comes back.
* Anything else (``EBADF``, ``EINVAL``: the listener is closed or not listening) is
  fatal for the listener.

Must never do I/O.
"""

from __future__ import annotations

import enum
import errno

__all__ = ["AcceptAction", "classify_accept_error"]


class AcceptAction(enum.Enum):
    """What a server should do after a failed ``accept``."""

    RETRY = "retry"
    """Transient, about one connection only: accept again at once."""
    BACK_OFF = "back_off"
    """Out of a resource: wait a little (without spinning), then accept again."""
    FATAL = "fatal"
    """The listening socket itself is unusable."""


_TRANSIENT = frozenset(
    code
    for code in (
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.EAGAIN,
        errno.EWOULDBLOCK,
        errno.EINTR,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        getattr(errno, "ENONET", None),
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.ECONNRESET,
        errno.ETIMEDOUT,
    )
    if code is not None
)
_RESOURCE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def classify_accept_error(code: int | None) -> AcceptAction:
    """Map the errno of a failed ``accept`` to what the server should do."""
    if code in _RESOURCE:
        return AcceptAction.BACK_OFF
    if code in _TRANSIENT:
        return AcceptAction.RETRY
    return AcceptAction.FATAL
