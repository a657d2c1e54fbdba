"""An HTTP proxy server (``sockit -l --proxy-type http``): CONNECT tunnels and
absolute-URI request forwarding, with optional Basic authentication.

What ncat's HTTP proxy does, made robust:

* **CONNECT** ``host:port HTTP/1.x``: connect to the target (Happy Eyeballs,
  :func:`sockit.aio.connect_socket`), answer ``HTTP/1.0 200 OK`` (ncat 7.93's exact
  bytes), then relay both ways with :class:`~sockit.relay.pump.Pump`: half-close and
  resets propagate, nothing is buffered without bound. Bytes the client sent right after
  its request head (an optimistic TLS ClientHello) reach the target first.
* **Forwarding** ``GET http://host[:port]/path HTTP/1.x`` (any method): connect to
  ``host:port`` (80 by default) and send the request with the origin-form target
  (``/path``), ``Host`` replaced by the URI's authority (RFC 9112 section 3.2.2), the
  hop-by-hop fields removed (``Connection`` and the fields it names, ``Keep-Alive``,
  ``Proxy-Connection``, ``Proxy-Authorization``, ``TE``, ``Upgrade``; RFC 9110 section
  7.6.1), ``Via`` added (RFC 9110 section 7.6.3) and ``Connection: close``. Then both
  directions are relayed as they are: the body (``Content-Length``, chunked or until
  EOF) goes to the origin, the response comes back byte for byte. One request per
  client connection; anything the client sends later goes to the same origin, so a
  connection never reaches a second target.
* **Authentication** (``auth=(user, password)``): every request needs
  ``Proxy-Authorization: Basic ...`` with those credentials (RFC 7617, UTF-8), compared
  in constant time; otherwise ``407`` with ``Proxy-Authenticate: Basic realm="Ncat"``
  (ncat's realm).
* **Errors** answer with one status line and close: ``400`` malformed request (also a
  relative target with a method other than CONNECT), ``408`` head not complete within
  ``header_timeout``, ``414`` request line too long, ``431`` header line or whole head
  too long (RFC 6585), ``505`` HTTP version other than 1.x, ``502`` target refused,
  unreachable or unresolvable, ``504`` target connect timed out (ncat answers 504 for
  every connect failure). One log line each. After an error the write side is shut and
  the client's remaining input is read and discarded for a bounded time (a "lingering
  close", as Apache httpd does), so the client reads the answer instead of a reset.

Limits on everything read from a client before the relay starts: the request head
(request line and header fields, each line and all together) is at most
``max_header_bytes`` and at most :data:`MAX_HEADER_FIELDS` fields, and must be complete
within ``header_timeout`` seconds of the accept. The server survives every client:
a failure ends that connection only, accept errors follow the servers' policy
(transient ones ignored, fd exhaustion backs off without spinning).

Logging (logger ``sockit.relay.http_proxy`` unless one is given): each relayed
connection's end at ``INFO`` (4-tuple, request, bytes, duration, outcome), each refused
or failed request at ``WARNING``, one line each.

Must never block the event loop, never read an unbounded amount before the relay
starts, never forward ``Proxy-Authorization``, and never connect anywhere but where the
request asked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.addr import SocketAddress
from sockit.addr.binding import set_linger_zero, set_nodelay
from sockit.aio._wait import wait_ready
from sockit.errors import AddressError, LimitExceeded
from sockit.proto.buffer import ReceiveBuffer
from sockit.relay._accepting import AcceptLoop
from sockit.relay.pump import Pump, SocketLeg

if TYPE_CHECKING:
    from collections.abc import Callable

    from sockit.sync import SocketListener

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "REALM",
    "HTTPProxyServer",
    "HTTPProxyStats",
]

_logger = logging.getLogger("sockit.relay.http_proxy")

DEFAULT_MAX_HEADER_BYTES = 16384
"""The request head's limit: 16 KiB, h11's ``max_incomplete_event_size`` default and
between nginx (8 KiB per line) and Node.js (16 KiB for the whole head)."""

DEFAULT_HEADER_TIMEOUT = 30.0
"""Seconds a client has to send its whole request head (Apache's ``RequestReadTimeout``
allows 20-40 s for headers); a slow-loris client holds one fd at most this long."""

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to connect to the target (and hand it the request head) before ``504``."""

MAX_HEADER_FIELDS = 100
"""At most this many header fields (``http.client``'s ``_MAXHEADERS``)."""

REALM = "Ncat"
"""The Basic realm of the ``407`` challenge: ncat's, so scripts see the same answer."""

_CONNECTED = b"HTTP/1.0 200 OK\r\n\r\n"
"""ncat 7.93's answer to a successful CONNECT, byte for byte."""

_REASONS = {
    400: "Bad Request",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}

# One recv while reading the head. Whatever arrives after the head in the same read is
# forwarded to the target, so this also bounds that leftover.
_RECV_SIZE = 16384
# The lingering close after an error answer: how long and how much of the client's
# remaining input is read and dropped before closing (Apache httpd lingers 2 s), so the
# close is a FIN after the answer and not a reset that may destroy it unread.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 256 * 1024

# RFC 9110 section 5.6.2: tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The request-target: visible ASCII only (RFC 3986 characters are a subset).
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# A field value: visible characters, SP, HTAB and obs-text (RFC 9110 section 5.5).
_FIELD_VALUE = re.compile(rb"[\x20-\x7e\x80-\xff\t]*")
_ABSOLUTE_HTTP = re.compile(rb"[hH][tT][tT][pP]://([^/?#]*)([^#]*)(?:#.*)?")
_PORT = re.compile(rb"[0-9]{1,5}")

# Fields never forwarded to the origin: hop-by-hop (RFC 9110 section 7.6.1, plus the
# de-facto Proxy-Connection), our credentials, and Host (replaced by the URI's authority).
_DROPPED_FIELDS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"upgrade",
        b"host",
    }
)
# The body is relayed verbatim, so the fields that frame it must stay even when the
# client lists them in Connection.
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding"})


@dataclass
class HTTPProxyStats:
    """Counts over the server's life, updated as connections come and go.

    ``connections`` accepted (``refused`` ones over ``max_conns`` not included),
    ``active`` now, ``tunnels`` CONNECTs established, ``forwarded`` requests sent to an
    origin, ``auth_failures`` ``407`` answers, ``errors`` every other failed connection
    (an error status sent, a client gone mid-head, a relay ended by a reset), and the
    bytes relayed from clients to targets (``bytes_up``) and back (``bytes_down``).
    """

    connections: int = 0
    active: int = 0
    refused: int = 0
    tunnels: int = 0
    forwarded: int = 0
    auth_failures: int = 0
    errors: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _Reject(Exception):
    """Answer the client with ``status`` and close; ``detail`` is for the log line,
    logged at ``level``."""

    def __init__(self, status: int, detail: str, level: int = logging.WARNING) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.level = level


class _ClientGone(Exception):
    """The client closed or reset before sending a whole request head."""


@dataclass(frozen=True, slots=True)
class _Request:
    method: bytes
    target: bytes
    version: bytes
    fields: list[tuple[bytes, bytes]]  # (name as sent, value without surrounding OWS)

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.fields if key.lower() == name]

    @property
    def line(self) -> str:
        text = b" ".join((self.method, self.target, self.version)).decode("latin-1")
        return text if len(text) <= 200 else text[:200] + "..."


class HTTPProxyServer:
    """An HTTP proxy listening on ``host``:``port`` (no host: IPv4 and IPv6, one port).

    ``auth=(user, password)`` requires Basic proxy authentication. ``max_header_bytes``
    bounds the request head (each line and all lines together), ``header_timeout`` the
    time to receive it, ``connect_timeout`` the connect to the target plus the hand-over
    of the request head. ``max_conns`` caps concurrent connections (more are closed at
    once, with a reset); ``idle_timeout`` ends a relayed connection with no bytes either
    way for that long (``None``: never). Connections ``admit(address)`` refuses (the
    allow/deny policy) are reset at accept.

    ``await start()`` binds and returns the real addresses; ``await serve_forever()``
    (which starts first if needed) serves until cancelled, then aborts every connection
    and closes everything. :meth:`aclose` does the same from outside.
    """

    def __init__(
        self,
        host: str | None,
        port: int,
        *,
        auth: tuple[str, str] | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_conns: int | None = None,
        idle_timeout: float | None = None,
        logger: logging.Logger | None = None,
        admit: Callable[[SocketAddress], bool] | None = None,
    ) -> None:
        if max_header_bytes < 64:
            raise ValueError(f"max_header_bytes must be at least 64, not {max_header_bytes}")
        if header_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("header_timeout and connect_timeout must be positive")
        if max_conns is not None and max_conns < 1:
            raise ValueError(f"max_conns must be at least 1, not {max_conns}")
        self.host = host
        self.port = port
        self._credentials = None if auth is None else f"{auth[0]}:{auth[1]}".encode()
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.connect_timeout = connect_timeout
        self.max_conns = max_conns
        self.idle_timeout = idle_timeout
        self.logger = logger or _logger
        self.admit = admit
        self.stats = HTTPProxyStats()
        self._listener: SocketListener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: asyncio.Future[None] | None = None
        self._accepting: AcceptLoop | None = None
        self._closed = False

    # --- set-up -------------------------------------------------------------------------

    @property
    def addresses(self) -> list[SocketAddress]:
        """The real bound addresses (empty before :meth:`start` and after closing)."""
        if self._listener is None or self._listener.closed:
            return []
        return list(self._listener.addresses)

    async def start(self) -> list[SocketAddress]:
        """Bind and listen (idempotent); return the real addresses (port 0 resolved).

        Raises ``OSError`` (``EADDRINUSE``...) if binding fails; nothing stays open.
        """
        if self._closed:
            raise RuntimeError("the proxy server was closed")
        if self._listener is None:
            from sockit.sync import listen  # noqa: PLC0415 (binding only)

            self._listener = listen(self.port, self.host)
            for sock in self._listener.sockets:
                sock.setblocking(False)
        return self.addresses

    async def serve_forever(self) -> None:
        """Serve until cancelled or :meth:`aclose` is called (then it returns); on
        cancellation, or if accepting fails fatally (the error is raised), every
        connection is aborted and the listener closed first."""
        await self.start()
        assert self._listener is not None  # noqa: S101 (start() set it)
        serving = self._serving = asyncio.get_running_loop().create_future()

        def fatal(error: OSError) -> None:
            if not serving.done():
                serving.set_exception(error)

        self._accepting = AcceptLoop(
            self._listener, self._accepted, fatal, logger=self.logger, admit=self.admit
        )
        try:
            self._accepting.start()
            await serving
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and abort every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.close()
        if self._listener is not None and not self._listener.closed:
            self._listener.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._serving is not None and not self._serving.done():
            self._serving.set_result(None)  # serve_forever() returns

    # --- accepting ----------------------------------------------------------------------

    def _accepted(self, conn: socket.socket, sockaddr: object) -> None:
        if self.max_conns is not None and self.stats.active >= self.max_conns:
            # Counted at accept, not when the task first runs, so a burst accepted in
            # one batch sees the connections accepted before it. Closed at once with a
            # reset (ncat's -m): the client learns now instead of waiting in a queue.
            self.stats.refused += 1
            set_linger_zero(conn)
            conn.close()
            return
        try:
            remote = SocketAddress.from_sockaddr(conn.family, sockaddr)
            conn.setblocking(False)
            set_nodelay(conn)
        except (OSError, ValueError):
            conn.close()
            return
        self.stats.connections += 1
        self.stats.active += 1
        task = asyncio.get_running_loop().create_task(self._handle(conn, remote))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one connection -----------------------------------------------------------------

    async def _handle(self, client: socket.socket, remote: SocketAddress) -> None:
        """Serve one client; never raises (except cancellation), always closes."""
        try:
            await self._serve_client(client, remote)
        except Exception:
            # A bug, not a client's fault: log it with its traceback, end this
            # connection only.
            self.stats.errors += 1
            self.logger.exception(
                "%s: internal error in the HTTP proxy", remote, extra={"event": "proxy_bug"}
            )
        finally:
            if client.fileno() >= 0:
                # Not handed to the pump nor closed on purpose (cancelled, or a bug):
                # a reset, so the client cannot take it for a complete answer.
                set_linger_zero(client)
                client.close()
            self.stats.active -= 1

    async def _serve_client(self, client: socket.socket, remote: SocketAddress) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.header_timeout
        request: _Request | None = None
        try:
            lines, rest = await self._read_head(client, deadline)
            request = _parse_request(lines)
            self._check_auth(request)
            if request.method == b"CONNECT":
                host, port = _parse_authority(request.target, default_port=None)
                head = b""
            else:
                host, port, head = _rewrite_request(request)
        except _ClientGone as gone:
            if str(gone):
                self.stats.errors += 1
                self.logger.warning(
                    "%s: %s",
                    remote,
                    gone,
                    extra={"event": "proxy_client_gone", "peer": str(remote)},
                )
            client.close()
            return
        except TimeoutError:
            await self._reject(
                client,
                remote,
                request,
                _Reject(408, f"no complete request head within {self.header_timeout:g} s"),
            )
            return
        except _Reject as reject:
            await self._reject(client, remote, request, reject)
            return
        await self._relay(client, remote, request, host=host, port=port, first=head + rest)

    async def _read_head(self, sock: socket.socket, deadline: float) -> tuple[list[bytes], bytes]:
        """The request line and field lines (without line ends), and the bytes received
        after the head. Raises :class:`_Reject` (414, 431, 400), ``TimeoutError`` or
        :class:`_ClientGone`."""
        buffer = ReceiveBuffer()
        budget = self.max_header_bytes
        lines: list[bytes] = []
        received = 0
        while True:
            while True:
                try:
                    # Each line (with its line end) must fit in what is left of the
                    # budget, so a single line and the whole head are both bounded.
                    line = buffer.take_line(max(budget - 1, 0))
                except LimitExceeded:
                    if not lines:
                        raise _Reject(414, "request line too long") from None
                    raise _Reject(431, "request head too long") from None
                if line is None:
                    break
                budget -= len(line) + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    if not lines:
                        # RFC 9112 section 2.2: ignore empty lines before the request
                        # line (the budget still bounds how many).
                        continue
                    return lines, buffer.take_all()
                lines.append(line)
                if len(lines) > MAX_HEADER_FIELDS + 1:
                    raise _Reject(431, f"more than {MAX_HEADER_FIELDS} header fields")
            if budget <= 0:
                raise _Reject(431 if lines else 414, "request head too long")
            try:
                data = await _recv(sock, deadline)
            except TimeoutError:
                raise
            except OSError as error:
                raise _ClientGone(f"receive failed: {error.strerror}") from error
            if not data:
                if received == 0:
                    raise _ClientGone("")  # connected and left: nothing to answer
                raise _Reject(400, "EOF in the request head")
            received += len(data)
            buffer.feed(data)

    def _check_auth(self, request: _Request) -> None:
        if self._credentials is None:
            return
        values = request.values(b"proxy-authorization")
        if not values:
            # The usual first try of a client that answers the challenge (ncat, curl
            # --proxy-anyauth): information, not a warning.
            raise _Reject(407, "no Proxy-Authorization", logging.INFO)
        for value in values:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"basic":
                continue
            try:
                decoded = base64.b64decode(token.strip(), validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(decoded, self._credentials):
                return
        raise _Reject(407, "wrong Proxy-Authorization")

    async def _reject(
        self,
        client: socket.socket,
        remote: SocketAddress,
        request: _Request | None,
        reject: _Reject,
    ) -> None:
        """Answer ``reject.status``, one log line, then a lingering close."""
        if reject.status == 407:
            self.stats.auth_failures += 1
        else:
            self.stats.errors += 1
        what = f' "{request.line}"' if request is not None else ""
        self.logger.log(
            reject.level,
            "%s:%s %d %s (%s)",
            remote,
            what,
            reject.status,
            _REASONS[reject.status],
            reject.detail,
            extra={"event": "proxy_rejected", "peer": str(remote), "status": reject.status},
        )
        extra = b""
        if reject.status == 407:
            extra = f'Proxy-Authenticate: Basic realm="{REALM}"\r\n'.encode()
        reply = _status_line(reject.status) + extra + b"\r\n"
        await _linger_close(client, reply)

    async def _relay(
        self,
        client: socket.socket,
        remote: SocketAddress,
        request: _Request,
        *,
        host: str,
        port: int,
        first: bytes,
    ) -> None:
        """Connect to ``host``:``port``, send ``first``, answer a CONNECT, pump."""
        from sockit.aio.connect import connect_socket  # noqa: PLC0415 (import cost)

        loop = asyncio.get_running_loop()
        tunnel = request.method == b"CONNECT"
        deadline = loop.time() + self.connect_timeout
        try:
            target, address = await connect_socket(host, port, timeout=self.connect_timeout)
        except AddressError as error:
            await self._reject(client, remote, request, _Reject(400, f"bad target: {error}"))
            return
        except TimeoutError as error:
            await self._reject(client, remote, request, _Reject(504, str(error)))
            return
        except OSError as error:
            await self._reject(client, remote, request, _Reject(502, str(error)))
            return
        client_leg = SocketLeg(client, str(remote))
        client_leg.set_addresses(None, remote)
        target_leg = SocketLeg(target, _join_host_port(host, port))
        target_leg.set_addresses(None, address)
        try:
            if first:
                await _send_all(target, first, deadline)
            if tunnel:
                await _send_all(client, _CONNECTED, loop.time() + self.header_timeout)
        except BaseException as error:
            client_leg.abort()
            target_leg.abort()
            if not isinstance(error, Exception):
                raise
            self.stats.errors += 1
            self.logger.warning(
                "%s: %s: cannot start the relay: %s",
                remote,
                request.line,
                error,
                extra={"event": "proxy_failed", "peer": str(remote)},
            )
            return
        if tunnel:
            self.stats.tunnels += 1
        else:
            self.stats.forwarded += 1
        # The 4-tuples while the sockets are open (the log line comes after the close).
        described = f"{client_leg.describe()} <-> {target_leg.describe()}"
        pump = Pump(client_leg, target_leg, idle_timeout=self.idle_timeout)
        result = await pump.run()
        sent = len(first) + result.sent_a_to_b  # the head and leftover went first
        self.stats.bytes_up += sent
        self.stats.bytes_down += result.sent_b_to_a
        reset = result.outcome == "reset"
        if reset:
            self.stats.errors += 1
        level = logging.WARNING if reset else logging.INFO
        if self.logger.isEnabledFor(level):
            detail = result.outcome
            if reset:
                detail = f"{result.failed_leg}: {result.error}"
            self.logger.log(
                level,
                '%s "%s": %d bytes sent, %d bytes received in %.3f s (%s)',
                described,
                request.line,
                sent,
                result.sent_b_to_a,
                result.duration,
                detail,
                extra={
                    "event": "proxy_done",
                    "peer": str(remote),
                    "request": request.line,
                    "bytes_up": sent,
                    "bytes_down": result.sent_b_to_a,
                    "duration": round(result.duration, 6),
                    "outcome": result.outcome,
                },
            )


# --- parsing (pure) ---------------------------------------------------------------------


def _parse_request(lines: list[bytes]) -> _Request:
    """The request line and fields; :class:`_Reject` (400 or 505) if malformed."""
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _Reject(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise _Reject(400, "malformed request line")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _Reject(400, "malformed HTTP version")
    if match[1] != b"1":
        raise _Reject(505, f"unsupported version {version.decode('ascii')}")
    fields: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in {b" ", b"\t"}:
            # RFC 9112 section 5.2: obsolete line folding; a proxy rejects or unfolds.
            raise _Reject(400, "obsolete line folding")
        name, colon, value = line.partition(b":")
        # No white space between name and colon (RFC 9112 section 5.1: must reject).
        if not colon or not _TOKEN.fullmatch(name):
            raise _Reject(400, "malformed header field")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise _Reject(400, "control character in a header field")
        fields.append((name, value))
    return _Request(method, target, version, fields)


def _parse_authority(authority: bytes, *, default_port: int | None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into (host, port); the port may be omitted only
    when there is a default. :class:`_Reject` (400) if malformed."""
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            raise _Reject(400, "malformed IPv6 literal")
        host, after = authority[1:end], authority[end + 1 :]
        if after and not after.startswith(b":"):
            raise _Reject(400, "malformed authority")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_raw = authority.rpartition(b":")
        if not colon:
            host, port_text = authority, None
        else:
            port_text = port_text_raw
            if b":" in host:
                raise _Reject(400, "IPv6 address without brackets")
    if not host:
        raise _Reject(400, "no host")
    if port_text:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            raise _Reject(400, "bad port")
        port = int(port_text)
    elif default_port is None:
        raise _Reject(400, "no port")
    else:
        port = default_port
    try:
        text = host.decode("ascii")
    except UnicodeDecodeError:
        raise _Reject(400, "non-ASCII host") from None
    return text, port


def _rewrite_request(request: _Request) -> tuple[str, int, bytes]:
    """The target host, port and the request head to send to the origin."""
    match = _ABSOLUTE_HTTP.fullmatch(request.target)
    if match is None:
        if b"://" in request.target:
            raise _Reject(400, "only http:// URIs can be forwarded (use CONNECT)")
        raise _Reject(400, "not an absolute http:// URI (and not CONNECT)")
    authority, path = match[1], match[2]
    if b"@" in authority:
        raise _Reject(400, "user information in the URI")
    host, port = _parse_authority(authority, default_port=80)
    if not path.startswith(b"/"):
        path = b"/" + path  # "http://h?q" has an empty path: origin-form is "/?q"
    named = {
        token.strip().lower()
        for value in request.values(b"connection") + request.values(b"proxy-connection")
        for token in value.split(b",")
    } - _FRAMING_FIELDS
    lines = [b" ".join((request.method, path, request.version)), b"Host: " + authority]
    for name, value in request.fields:
        key = name.lower()
        if key in _DROPPED_FIELDS or key in named:
            continue
        lines.append(name + b": " + value)
    lines.append(b"Via: " + request.version[5:] + b" sockit")
    lines.append(b"Connection: close")
    return host, port, b"\r\n".join(lines) + b"\r\n\r\n"


def _status_line(status: int) -> bytes:
    return f"HTTP/1.0 {status} {_REASONS[status]}\r\n".encode()


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- non-blocking I/O with deadlines ----------------------------------------------------


async def _wait_ready(fd: int, *, writable: bool, deadline: float) -> None:
    """Wait until ``fd`` is readable (writable); ``TimeoutError`` at ``deadline``."""
    if not await wait_ready(fd, writable=writable, deadline=deadline):
        raise TimeoutError("timed out")


async def _recv(sock: socket.socket, deadline: float) -> bytes:
    """One ``recv`` of up to :data:`_RECV_SIZE` bytes, waiting until ``deadline``."""
    while True:
        try:
            return sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            pass
        await _wait_ready(sock.fileno(), writable=False, deadline=deadline)


async def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Send every byte of ``data`` by ``deadline`` (``TimeoutError`` otherwise)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            await _wait_ready(sock.fileno(), writable=True, deadline=deadline)
            continue
        view = view[sent:]


async def _linger_close(sock: socket.socket, reply: bytes) -> None:
    """Send ``reply``, shut the write side, drop the client's input until its EOF (at
    most :data:`_LINGER_BYTES` for :data:`_LINGER_SECONDS`), close. A client that does
    not take the reply in that time is reset."""
    deadline = asyncio.get_running_loop().time() + _LINGER_SECONDS
    try:
        await _send_all(sock, reply, deadline)
    except OSError:  # a timeout too: the client does not read, or is gone
        set_linger_zero(sock)
        sock.close()
        return
    try:
        sock.shutdown(socket.SHUT_WR)
        dropped = 0
        while dropped < _LINGER_BYTES:
            data = await _recv(sock, deadline)
            if not data:
                break
            dropped += len(data)
    except OSError:
        pass  # reset, or still open at the deadline: the reply was sent, close anyway
    finally:
        sock.close()
