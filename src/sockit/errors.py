"""The sockit exception tree: every class says who is at fault.

Rules this module is the single home of:

* Errors that come from the operating system keep an :class:`OSError` base (and the
  specific built-in subclass where one exists), so ``except OSError`` and
  ``except ConnectionRefusedError`` keep working around sockit code.
* Timeouts are :class:`TimeoutError`, and nothing that is not a timeout is one.
* The original ``OSError``/``gaierror`` is chained as ``__cause__``.
* Which errno means "closed by you" and which "broken by the peer or the network":
  :func:`translate_os_error`, the one translation both the sync and the async layer use.

This module must never import anything from sockit, and never touch a socket.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "AddressError",
    "BrokenResourceError",
    "ClosedResourceError",
    "ConnectAttempt",
    "ConnectError",
    "ConnectRefusedError",
    "ConnectTimeoutError",
    "ConnectionResetByPeer",
    "DatagramTooLarge",
    "DatagramTruncated",
    "EndOfStream",
    "IncompleteRead",
    "LimitExceeded",
    "PeerClosedError",
    "ProxyAuthError",
    "ProxyError",
    "ProxyProtocolError",
    "ResolutionError",
    "SockitError",
    "translate_os_error",
]


class SockitError(Exception):
    """Base class of every exception sockit defines.

    Catch this to handle "anything sockit complained about"; most classes also derive
    from a built-in class (:class:`OSError`, :class:`ValueError`, :class:`EOFError`) so
    code written against the standard library keeps catching them.
    """


# --- your fault: bad input, detected before any I/O -----------------------------------


class AddressError(SockitError, ValueError):
    """An endpoint, host or port is malformed; raised before any name lookup.

    Examples: port ``65536``, ``-1`` or ``"99999"``; IPv4 shorthand such as
    ``010.1.1.1`` or ``0x7f.1``; ``[::1`` with no closing bracket.
    """


class ClosedResourceError(SockitError, OSError):
    """You used a socket object after closing it (or while another call closed it).

    Derives from :class:`OSError` with ``errno.EBADF`` so code that catches the
    standard library's "Bad file descriptor" still catches it.
    """

    def __init__(self, message: str = "the socket was closed by this program") -> None:
        super().__init__(_errno.EBADF, message)

    def __str__(self) -> str:
        return str(self.args[1])


# --- the peer's or the network's fault --------------------------------------------------


class BrokenResourceError(SockitError, OSError):
    """The peer or the network broke the connection (reset, broken pipe, ...).

    The underlying :class:`OSError` is ``__cause__`` and its errno is copied here.
    A connection that died of TCP's own retransmission or keepalive timeout
    (``ETIMEDOUT`` from a receive) is broken, not a :class:`TimeoutError`: only a
    deadline the caller set raises ``TimeoutError``.
    """

    def __str__(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else super().__str__()


class ConnectionResetByPeer(BrokenResourceError, ConnectionResetError):
    """The peer (or a middlebox) reset the connection: a TCP RST arrived.

    Data the peer sent may have been lost; this is never reported as a clean EOF.
    """


class PeerClosedError(BrokenResourceError, BrokenPipeError):
    """We sent data after the peer closed its receiving side (``EPIPE``)."""


class ProxyProtocolError(SockitError, ValueError):
    """A PROXY protocol header is malformed, or cannot express what was asked.

    Raised by the sans-I/O codec in :mod:`sockit.proto.proxy` as soon as the bytes
    received cannot be (the start of) a valid version 1 or version 2 header, and when
    encoding is asked for something the protocol cannot carry. The HAProxy
    specification says a receiver must then abort the connection: the sender (a proxy
    that should not be trusted, or a client that speaks no PROXY protocol) is at fault.
    """


class ProxyError(SockitError, OSError):
    """A proxy (SOCKS4, SOCKS5 or HTTP CONNECT) was reached but did not open the tunnel.

    The proxy refused or could not reach the target, broke its own protocol, or closed
    or reset the connection during the handshake: the proxy, or what lies behind it, is
    at fault. (Not reaching the proxy at all is a :class:`ConnectError` naming the
    proxy's address, and a deadline that expires is a :class:`ConnectTimeoutError`:
    never this class. Nor is this :class:`ProxyProtocolError`, which is about HAProxy's
    PROXY protocol header.)

    ``proxy`` is the proxy's ``host:port``, ``target`` the ``host:port`` the tunnel was
    asked for, ``reply`` the proxy's answer code when it sent one (the SOCKS5 ``REP``
    byte, the SOCKS4 ``CD`` byte, the HTTP status), and ``errno`` the errno that means
    the same where one does (a SOCKS5 "connection refused" is ``ECONNREFUSED``), else
    ``None``. The message is one line naming both addresses.
    """

    def __init__(
        self,
        proxy: str,
        target: str,
        message: str,
        *,
        errno: int | None = None,
        reply: int | None = None,
    ) -> None:
        super().__init__(errno, message)
        self.proxy = proxy
        self.target = target
        self.reply = reply

    def __str__(self) -> str:
        return str(self.args[1])


class ProxyAuthError(ProxyError):
    """The proxy rejected the credentials given, or wants credentials and got none.

    A SOCKS5 username/password failure (RFC 1929) or "no acceptable methods", a SOCKS4
    identd rejection, an HTTP ``407`` (or a challenge for a scheme other than Basic).
    ``errno`` is ``EACCES``.
    """


class ResolutionError(SockitError, OSError):
    """A name could not be turned into addresses.

    The :class:`socket.gaierror` (when there was one) is chained as ``__cause__``.
    ``host`` names what was looked up.
    """

    def __init__(self, host: str, message: str, *, gai_errno: int | None = None) -> None:
        super().__init__(gai_errno, f"cannot resolve {host!r}: {message}")
        self.host = host

    def __str__(self) -> str:
        return str(self.args[1])


class ConnectAttempt:
    """One failed connect attempt of a (Happy Eyeballs) connect, for error reports.

    ``address`` is the address tried (``host:port`` or ``[v6]:port``), ``error`` what it
    failed with, ``elapsed`` the seconds from the start of the whole connect to the
    failure. (A plain class, not a dataclass: importing ``dataclasses`` costs more than
    this whole module, and every sockit import pays for ``errors``.)
    """

    __slots__ = ("address", "elapsed", "error")

    def __init__(self, address: str, error: OSError, elapsed: float) -> None:
        self.address = address
        self.error = error
        self.elapsed = elapsed

    def __repr__(self) -> str:
        return (
            f"ConnectAttempt(address={self.address!r}, error={self.error!r}, "
            f"elapsed={self.elapsed!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConnectAttempt):
            return NotImplemented
        return (self.address, self.error, self.elapsed) == (
            other.address,
            other.error,
            other.elapsed,
        )

    def __hash__(self) -> int:
        return hash((self.address, self.elapsed))

    def __str__(self) -> str:
        return f"{self.address}: {_describe(self.error)} after {self.elapsed * 1000:.0f} ms"


def _describe(error: OSError) -> str:
    if error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class ConnectError(SockitError, OSError):
    """Every connect attempt failed.

    ``host``, ``port`` and ``attempts`` (each address, its error and the elapsed time)
    say exactly what happened. ``errno`` is the errno the attempts agree on, see
    :func:`connect_error_from_attempts` for which subclass is raised.
    """

    def __init__(
        self,
        host: str,
        port: int,
        attempts: list[ConnectAttempt],
        *,
        errno: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.attempts = list(attempts)
        if reason is None:
            if not attempts:
                reason = "no addresses to try"
            elif len(attempts) == 1:
                reason = str(attempts[0])
            else:
                reason = "; ".join(str(attempt) for attempt in attempts)
        super().__init__(errno, f"cannot connect to {_format_host_port(host, port)}: {reason}")

    def __str__(self) -> str:
        return str(self.args[1])


class ConnectRefusedError(ConnectError, ConnectionRefusedError):
    """Every reachable address refused the connection (nothing listens there)."""


class ConnectTimeoutError(ConnectError, TimeoutError):
    """The connect did not complete before its timeout."""


def _format_host_port(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def connect_error_from_attempts(
    host: str, port: int, attempts: list[ConnectAttempt], *, timed_out: bool = False
) -> ConnectError:
    """Build the exception for a connect where every attempt failed.

    The class is chosen so that the most useful ``except`` clause matches:

    * the overall timeout expired -> :class:`ConnectTimeoutError` (a ``TimeoutError``);
    * any attempt was refused -> :class:`ConnectRefusedError` (a
      ``ConnectionRefusedError``): a host that answers with a refusal on one family is
      the best evidence of what is wrong, even if the other family was unreachable;
    * otherwise :class:`ConnectError` with the errno of the last attempt.

    The last attempt's error is chained as ``__cause__`` by the caller.
    """
    if timed_out:
        return ConnectTimeoutError(
            host, port, attempts, errno=_errno.ETIMEDOUT, reason=_timeout_reason(attempts)
        )
    if any(isinstance(attempt.error, ConnectionRefusedError) for attempt in attempts):
        return ConnectRefusedError(host, port, attempts, errno=_errno.ECONNREFUSED)
    last_errno = attempts[-1].error.errno if attempts else None
    return ConnectError(host, port, attempts, errno=last_errno)


def _timeout_reason(attempts: list[ConnectAttempt]) -> str:
    if not attempts:
        return "timed out"
    return "timed out; " + "; ".join(str(attempt) for attempt in attempts)


# --- translating the operating system's errors ----------------------------------------

# errnos that mean the connection is dead through no fault of the caller.
_BROKEN_ERRNOS = frozenset(
    {
        _errno.ECONNRESET,
        _errno.EPIPE,
        _errno.ECONNABORTED,
        _errno.ENOTCONN,
        _errno.ETIMEDOUT,
        _errno.EHOSTUNREACH,
        _errno.ENETUNREACH,
        _errno.ENETDOWN,
        _errno.EHOSTDOWN,
        _errno.ESHUTDOWN,
    }
)
# errnos that mean "this fd is gone": after our own close() that is our fault.
_CLOSED_ERRNOS = frozenset({_errno.EBADF, _errno.ENOTSOCK})


def translate_os_error(error: BaseException, *, closed: bool, operation: str) -> BaseException:
    """The exception that says who is at fault for ``error``, seen by ``operation``.

    The one translation of both twins (sync and aio each raise the result ``from
    error``; like trio's ``_translate_socket_errors_to_stream_errors``):

    * a timeout (``TimeoutError`` without errno, or ``BlockingIOError``: "nothing yet"
      on a socket in non-blocking mode, a deadline of zero that expired) ->
      ``TimeoutError`` naming the operation;
    * ``closed`` (this program closed the socket), ``EBADF`` or ``ENOTSOCK`` ->
      :class:`ClosedResourceError`;
    * a reset (``ECONNRESET``) -> :class:`ConnectionResetByPeer`, a broken pipe
      (``EPIPE``) -> :class:`PeerClosedError`, other errnos of a dead connection
      (``ECONNABORTED``, ``ENOTCONN``, ``ETIMEDOUT``, unreachable, down, ``ESHUTDOWN``)
      -> :class:`BrokenResourceError` with that errno;
    * anything that is not an ``OSError`` (an event loop's transport may report
      anything) -> :class:`BrokenResourceError`;
    * any other ``OSError`` -> ``error`` itself, unchanged.

    Returns the exception; never raises it.
    """
    if isinstance(error, TimeoutError) and error.errno is None:
        return TimeoutError(f"{operation} timed out")
    if isinstance(error, BlockingIOError):
        return TimeoutError(f"{operation} timed out (timeout=0)")
    if closed:
        return ClosedResourceError(f"{operation} on a closed socket")
    if not isinstance(error, OSError):
        return BrokenResourceError(None, f"{operation} failed: {error!r}")
    code = error.errno
    if code in _CLOSED_ERRNOS:
        return ClosedResourceError(f"{operation} on a closed socket")
    # An errno-less reset or broken pipe comes from a transport that made one up.
    if code == _errno.ECONNRESET or (code is None and isinstance(error, ConnectionResetError)):
        return ConnectionResetByPeer(
            _errno.ECONNRESET, f"{operation} failed: connection reset by peer"
        )
    if code == _errno.EPIPE or (code is None and isinstance(error, BrokenPipeError)):
        return PeerClosedError(_errno.EPIPE, f"{operation} failed: the peer closed the connection")
    if code in _BROKEN_ERRNOS:
        return BrokenResourceError(code, f"{operation} failed: {error.strerror or error}")
    return error


# --- stream ended where a message was required ----------------------------------------


class EndOfStream(SockitError, EOFError):
    """The peer sent EOF at a clean message boundary where a message was required."""


class IncompleteRead(SockitError, EOFError):
    """The peer sent EOF in the middle of a message.

    ``partial`` holds the bytes of the incomplete message (they are no longer buffered);
    ``expected`` is the number of bytes wanted, or ``None`` when a delimiter was wanted.
    """

    def __init__(self, partial: bytes, expected: int | None) -> None:
        self.partial = partial
        self.expected = expected
        wanted = "a delimiter" if expected is None else f"{expected} bytes"
        super().__init__(f"EOF after {len(partial)} bytes while waiting for {wanted}")


class LimitExceeded(SockitError):
    """More bytes arrived than the caller allowed (``max_bytes``) without a delimiter.

    The peer is at fault (or the limit is too small). The buffered bytes are kept, so a
    caller may still read them with ``recv()`` if it wants to recover.
    """


# --- datagrams ------------------------------------------------------------------------


class DatagramTruncated(SockitError):
    """A received datagram was larger than the buffer and was cut.

    ``data`` is what fit, ``size`` the real length of the datagram (when the kernel
    reports it), ``address`` the sender. The datagram is consumed: it cannot be read
    again, which is why this is raised instead of returning the shortened data silently.
    """

    def __init__(self, data: bytes, size: int, address: object) -> None:
        self.data = data
        self.size = size
        self.address = address
        super().__init__(
            f"datagram of {size} bytes truncated to {len(data)} bytes "
            f"(pass a larger max_bytes to recv)"
        )


class DatagramTooLarge(SockitError, OSError):
    """A datagram is larger than the socket can send in one piece (``EMSGSIZE``)."""

    def __init__(self, size: int, limit: int | None) -> None:
        self.size = size
        self.limit = limit
        detail = f" (at most {limit} bytes here)" if limit is not None else ""
        super().__init__(_errno.EMSGSIZE, f"datagram of {size} bytes is too large{detail}")

    def __str__(self) -> str:
        return str(self.args[1])
