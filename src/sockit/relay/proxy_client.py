"""The client side of a proxy: a TCP tunnel to ``host:port`` through a SOCKS4/4a, SOCKS5
or HTTP CONNECT proxy, as ncat's ``--proxy``, ``--proxy-type``, ``--proxy-auth`` and
``--proxy-dns`` ask for it.

Two steps, one deadline:

1. Connect to the proxy with :func:`sockit.aio.connect_socket` (Happy Eyeballs, ``family``
   and ``local_address`` as for any connect; failures are the usual
   :class:`~sockit.ConnectError` family, naming the proxy's address).
2. Ask the proxy for the tunnel on that socket:

   * **SOCKS4, SOCKS4a, SOCKS5** (RFC 1928, username/password RFC 1929) through the
     python-socks library (``pip install sockit[proxy]``), imported only here and only
     when a SOCKS proxy is used, so ``import sockit`` and ``sockit --version`` never pay
     for it. python-socks reads every SOCKS reply with exact lengths, so no byte of the
     tunnel is consumed by the handshake. It is handed the socket connected in step 1
     through its documented ``forward`` hook (the previous hop of a proxy chain), since
     it has no other public way to take a connected socket.
   * **HTTP CONNECT** (RFC 9110 section 9.3.6) is done here, not by python-socks: its
     connector reads the answer with one ``recv(65536)`` and drops whatever followed the
     head in that read. A target that speaks first (SMTP, SSH, the ``ncat -l`` at the
     other end) had its first bytes lost that way in 10 of 30 tries through ncat 7.93's
     HTTP proxy on loopback; a head split over two segments would also leave its rest in
     the tunnel. Here the head is read with ``MSG_PEEK`` and exactly its bytes are
     consumed, so the socket returned starts at the tunnel's first byte. Credentials
     go preemptively as ``Proxy-Authorization: Basic`` (RFC 7617, UTF-8 as sockit's own
     proxy expects; bytes that were not UTF-8 on the command line are sent as they were).

Where the target name is resolved, ``--proxy-dns`` (ncat(1)):

* ``remote`` (ncat's default): the name goes to the proxy (SOCKS4a, SOCKS5 domain name,
  the HTTP request-target); sockit resolves nothing.
* ``local``: sockit resolves the name and sends the first address (IPv4 only for
  SOCKS4, which cannot carry IPv6); a name that does not resolve is a
  :class:`~sockit.ResolutionError`, before the proxy is contacted.
* ``both``: ``local``, and a name that does not resolve goes to the proxy instead.
* ``none``: nothing is resolved anywhere: the target must be an IP address.

An IP address as target is sent as it is in every mode. One address is tried: a second
address would need a second proxy connection (ncat does the same).

Errors, each one line naming the addresses involved:

* malformed input (:func:`parse_proxy`, or a target the proxy type or ``--proxy-dns``
  cannot carry): :class:`~sockit.AddressError` or ``ValueError``, before any I/O;
* the proxy cannot be reached: :class:`~sockit.ConnectError` (refused:
  :class:`~sockit.ConnectRefusedError`) with ``host``/``port`` of the proxy, its
  message naming the target too;
* the proxy was reached but refused the tunnel (target refused or unreachable, a
  ruleset, a broken or closed handshake): :class:`~sockit.ProxyError`; refused
  credentials or credentials missing: :class:`~sockit.ProxyAuthError`;
* the deadline (``timeout``, covering everything) passed:
  :class:`~sockit.ConnectTimeoutError`, a ``TimeoutError``.

This module must never read from the environment (the caller passes
``NCAT_PROXY_AUTH``), never consume a byte of the tunnel, never leave a socket open when
it raises or is cancelled, and never connect anywhere but to the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import errno as errno_codes
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from sockit.addr import (
    InetEndpoint,
    Resolver,
    SocketAddress,
    check_host,
    format_host_port,
    is_ip_literal,
    parse_endpoint,
    parse_port,
)
from sockit.aio._wait import wait_ready
from sockit.errors import (
    AddressError,
    ConnectError,
    ConnectTimeoutError,
    ProxyAuthError,
    ProxyError,
    ResolutionError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PROXY_DNS",
    "DEFAULT_PROXY_PORTS",
    "DEFAULT_PROXY_TYPE",
    "MAX_RESPONSE_HEAD",
    "PROXY_DNS_MODES",
    "PROXY_TYPES",
    "ProxyDNS",
    "ProxySpec",
    "ProxyType",
    "connect_via_proxy",
    "parse_proxy",
]

ProxyType = Literal["socks4", "socks5", "http"]
ProxyDNS = Literal["local", "remote", "both", "none"]

PROXY_TYPES: tuple[ProxyType, ...] = ("http", "socks4", "socks5")
PROXY_DNS_MODES: tuple[ProxyDNS, ...] = ("local", "remote", "both", "none")

DEFAULT_PROXY_TYPE: ProxyType = "http"
"""ncat(1): "If this option is not used, the default protocol is http"."""

DEFAULT_PROXY_DNS: ProxyDNS = "remote"
"""ncat(1), ``--proxy-dns``: "remote ... This is the default behavior"."""

DEFAULT_PROXY_PORTS: Mapping[ProxyType, int] = {"socks4": 1080, "socks5": 1080, "http": 3128}
"""ncat(1): "the proxy protocol's well-known port is used (1080 for SOCKS and 3128 for
HTTP)" (1080 is IANA's ``socks``; 3128 is Squid's default)."""

MAX_RESPONSE_HEAD = 16384
"""Bytes an HTTP proxy's answer head may take (status line and fields together): the
same 16 KiB sockit's own proxy allows a request head (h11's default event size)."""

# RFC 1929: ULEN and PLEN are one byte each, and at least 1.
_SOCKS5_CREDENTIAL_MAX = 255
# A reason phrase or SOCKS message quoted in an error: enough to recognise, one line.
_QUOTE_MAX = 100
# What the proxy's status line may look like (RFC 9112 section 4; the reason phrase may
# be empty or missing). Anything else is a proxy that does not speak HTTP.
_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?\r?\n")
# The blank line that ends a head: CRLF CRLF, or bare LFs, which RFC 9112 section 2.2
# lets a recipient accept.
_HEAD_END = re.compile(rb"\n\r?\n")
_PEEK_SIZE = 4096
# No deadline for python-socks when the caller set none (it substitutes 60 s for None).
_NO_DEADLINE = 365 * 24 * 3600.0
# SOCKS5 REP codes (RFC 1928 section 6) with an errno that says the same thing.
_SOCKS5_ERRNOS = {
    2: errno_codes.EACCES,  # connection not allowed by ruleset
    3: errno_codes.ENETUNREACH,
    4: errno_codes.EHOSTUNREACH,
    5: errno_codes.ECONNREFUSED,
    6: errno_codes.ETIMEDOUT,  # TTL expired
    7: errno_codes.EOPNOTSUPP,  # command not supported
    8: errno_codes.EAFNOSUPPORT,  # address type not supported
}
# SOCKS4 CD codes 92 and 93: the server's identd check of the user id failed.
_SOCKS4_IDENT_FAILURES = frozenset({92, 93})
# python-socks reports these SOCKS5 authentication failures without a code; these are
# its messages (python_socks/_protocols/socks5.py). The tests pin them against a real
# microsocks, so a change in python-socks fails a test rather than misfiling the error.
_SOCKS5_AUTH_MESSAGES = (
    "authentication failure",
    "no acceptable authentication methods",
)


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """A proxy to connect through: its type, address, credentials and DNS policy.

    ``type`` is ``"socks4"``, ``"socks5"`` or ``"http"``; ``host`` is checked and
    normalised by :func:`sockit.addr.check_host`; ``port`` is 0..65535 (0 is refused).
    Credentials per type: SOCKS4 takes a user id (``username``) and no password; SOCKS5
    takes both or neither, each 1-255 ASCII characters (RFC 1929; python-socks sends
    ASCII only); HTTP takes both or neither (the password may be empty) and a
    ``username`` without ``:`` (RFC 7617). ``dns`` is one of :data:`PROXY_DNS_MODES`.

    The password never appears in ``repr()``. Construction raises ``ValueError`` (or
    :class:`~sockit.AddressError`, a ``ValueError``, for the address) for anything else.
    """

    type: ProxyType
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    dns: ProxyDNS = DEFAULT_PROXY_DNS

    def __post_init__(self) -> None:
        if self.type not in PROXY_TYPES:
            raise ValueError(f"unknown proxy type {self.type!r}: socks4, socks5 or http")
        if self.dns not in PROXY_DNS_MODES:
            raise ValueError(f"unknown proxy DNS mode {self.dns!r}: local, remote, both or none")
        object.__setattr__(self, "host", check_host(self.host))
        if parse_port(self.port) == 0:
            raise AddressError(f"invalid proxy address {self.address}: port 0")
        _check_credentials(self.type, self.username, self.password)

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``) of the proxy."""
        return format_host_port(self.host, self.port)

    def __str__(self) -> str:
        return f"{_TYPE_NAMES[self.type]} proxy {self.address}"


_TYPE_NAMES: Mapping[str, str] = {"socks4": "SOCKS4", "socks5": "SOCKS5", "http": "HTTP"}


def _check_credentials(kind: str, username: str | None, password: str | None) -> None:
    if kind == "socks4":
        if password is not None:
            raise ValueError("a SOCKS4 proxy takes a user id only, no password")
        if username is not None and (not username.isascii() or "\0" in username):
            raise ValueError("a SOCKS4 user id must be ASCII without NUL characters")
        return
    if (username is None) != (password is None):
        raise ValueError(f"a {_TYPE_NAMES[kind]} proxy needs both a user name and a password")
    if username is None or password is None:
        return
    if kind == "socks5":
        for what, value in (("user name", username), ("password", password)):
            if not value or len(value) > _SOCKS5_CREDENTIAL_MAX or not value.isascii():
                raise ValueError(
                    f"a SOCKS5 {what} must be 1 to {_SOCKS5_CREDENTIAL_MAX} ASCII "
                    f"characters (RFC 1929)"
                )
    elif ":" in username:
        raise ValueError("an HTTP proxy user name cannot contain ':' (RFC 7617)")


def parse_proxy(
    text: str,
    proxy_type: str | None = None,
    auth: str | None = None,
    dns: str | None = None,
    *,
    env_auth: str | None = None,
) -> ProxySpec:
    """The :class:`ProxySpec` for ncat's ``--proxy TEXT --proxy-type proxy_type
    --proxy-auth auth --proxy-dns dns``.

    * ``text``: ``HOST[:PORT]``; an IPv6 address with a port in brackets
      (``[::1]:1080``); without a port the type's well-known port
      (:data:`DEFAULT_PROXY_PORTS`).
    * ``proxy_type``: ``socks4``, ``socks5`` or ``http`` (any case); ``None`` means
      ``http``, ncat's default.
    * ``auth``: ``USER:PASS`` for SOCKS5 and HTTP (split at the first ``:``); for SOCKS4
      the whole text is the user id, as ncat sends it. ``None`` or ``""`` falls back to
      ``env_auth``: pass ``os.environ.get("NCAT_PROXY_AUTH")`` there (ncat(1): the
      option takes precedence; the variable keeps credentials out of ``ps``). This
      function never reads the environment itself.
    * ``dns``: ``local``, ``remote``, ``both`` or ``none`` (any case); ``None`` means
      ``remote``, ncat's default.

    Raises :class:`~sockit.AddressError` for a malformed address (a UNIX path, no host,
    a bad port) and ``ValueError`` for an unknown type or mode, or credentials the type
    cannot carry. Does no I/O, except that a service name as port reads services(5).
    """
    kind = DEFAULT_PROXY_TYPE if proxy_type is None else proxy_type.lower()
    if kind not in PROXY_TYPES:
        raise ValueError(f"unknown proxy type {proxy_type!r}: socks4, socks5 or http")
    mode = DEFAULT_PROXY_DNS if dns is None else dns.lower()
    if mode not in PROXY_DNS_MODES:
        raise ValueError(f"unknown proxy DNS mode {dns!r}: local, remote, both or none")
    endpoint = parse_endpoint(text, default_port=DEFAULT_PROXY_PORTS[kind])
    if not isinstance(endpoint, InetEndpoint) or endpoint.host is None:
        raise AddressError(f"invalid proxy address {text!r}: expected HOST[:PORT]")
    credentials = auth or env_auth or None
    username: str | None = None
    password: str | None = None
    if credentials is not None:
        if kind == "socks4":
            username = credentials
        else:
            username, colon, password = credentials.partition(":")
            if not colon:
                raise ValueError(
                    f"the credentials of a {_TYPE_NAMES[kind]} proxy must be USER:PASS"
                )
    return ProxySpec(
        kind,
        endpoint.host,
        endpoint.port,
        username=username,
        password=password,
        dns=mode,
    )


async def connect_via_proxy(
    proxy: ProxySpec,
    host: str,
    port: int | str,
    *,
    timeout: float | None = None,
    family: int | None = None,
    local_address: tuple[str, int] | str | None = None,
    resolver: Resolver | None = None,
) -> tuple[socket.socket, SocketAddress]:
    """Open a tunnel through ``proxy`` to ``host``:``port``.

    Returns the connected, non-blocking socket (``TCP_NODELAY`` on), whose next byte
    received is the target's first byte and whose first byte sent reaches the target,
    and the proxy's address it is connected to. The caller owns the socket and must
    close it. ``timeout`` (seconds, ``None`` for no limit) covers everything: local
    resolution, the connect to the proxy and the handshake. ``family``
    (``AF_INET``/``AF_INET6``) restricts the connect to the proxy and a local
    resolution of ``host`` (SOCKS4 resolves to IPv4 regardless); ``local_address`` is
    the ``(host, port)`` to bind before connecting to the proxy (``-s``/``-p``).
    ``resolver`` answers every local lookup (the proxy's name, and ``host`` when
    ``proxy.dns`` asks for local resolution), as for :func:`sockit.aio.connect_socket`:
    ``None`` is the system resolver, off the loop's thread.

    The name is resolved as ``proxy.dns`` says (see the module docstring). Raises (see
    the module docstring for when): :class:`~sockit.AddressError`,
    :class:`~sockit.ResolutionError`, :class:`~sockit.ConnectError` (for the proxy),
    :class:`~sockit.ProxyError`, :class:`~sockit.ProxyAuthError`,
    :class:`~sockit.ConnectTimeoutError`; ``ImportError`` naming the ``sockit[proxy]``
    extra if a SOCKS proxy is asked for and python-socks is not installed. Nothing stays
    open when it raises or is cancelled.
    """
    port_number = parse_port(port)
    target_host = check_host(host)
    target = format_host_port(target_host, port_number)
    _check_target(proxy, target_host, target)
    if proxy.type != "http":
        _import_python_socks()  # before any I/O: a missing extra is a set-up error
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    sock: socket.socket | None = None
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            destination = await _destination(
                proxy,
                target_host,
                port_number,
                family=family,
                deadline=deadline,
                resolver=resolver,
            )
            sock, address = await _connect_to_proxy(
                proxy,
                target,
                deadline,
                family=family,
                local_address=local_address,
                resolver=resolver,
            )
            if proxy.type == "http":
                await _http_connect(sock, proxy, destination, port_number, target)
            else:
                remaining = None if deadline is None else deadline - loop.time()
                await _socks_connect(
                    sock,
                    proxy,
                    destination,
                    port_number,
                    target,
                    remaining=remaining,
                    timeout=timeout,
                )
    except BaseException as error:
        if sock is not None:
            sock.close()
        if isinstance(error, TimeoutError) and scope.expired():
            raise _timed_out(proxy, target, timeout) from error
        raise
    return sock, address


def _check_target(proxy: ProxySpec, host: str, target: str) -> None:
    """Refuse, before any I/O, a target this proxy type or DNS mode cannot carry."""
    literal = is_ip_literal(host)
    if literal and "%" in host:
        raise AddressError(f"cannot send {target} to a proxy: an IPv6 scope is local")
    if proxy.type == "socks4" and literal and ":" in host:
        raise AddressError(f"cannot send {target} to a SOCKS4 proxy: SOCKS4 has no IPv6")
    if proxy.dns == "none" and not literal:
        raise AddressError(
            f"cannot send {target} to the proxy with --proxy-dns none: "
            f"the target must be an IP address"
        )


async def _destination(
    proxy: ProxySpec,
    host: str,
    port: int,
    *,
    family: int | None,
    deadline: float | None,
    resolver: Resolver | None,
) -> str:
    """What to send to the proxy as the target host, per ``proxy.dns``."""
    if is_ip_literal(host) or proxy.dns in {"remote", "none"}:
        return host
    from sockit.aio._resolve import resolve  # noqa: PLC0415 (only for local DNS)

    if proxy.type == "socks4":
        family = socket.AF_INET  # SOCKS4 carries IPv4 addresses only (ncat(1))
    loop = asyncio.get_running_loop()
    try:
        infos = await resolve(
            resolver,
            host,
            port,
            family=family or 0,
            timeout=None if deadline is None else max(0.0, deadline - loop.time()),
        )
    except ResolutionError:
        if proxy.dns == "both":
            return host  # ncat(1): "Unresolvable hostnames are passed onto the remote proxy"
        raise
    # The resolver's order already applied RFC 6724 and gai.conf; one address is tried.
    return infos[0].address.host


async def _connect_to_proxy(
    proxy: ProxySpec,
    target: str,
    deadline: float | None,
    *,
    family: int | None,
    local_address: tuple[str, int] | str | None,
    resolver: Resolver | None,
) -> tuple[socket.socket, SocketAddress]:
    from sockit.aio.connect import connect_socket  # noqa: PLC0415 (import cost)

    loop = asyncio.get_running_loop()
    try:
        return await connect_socket(
            proxy.host,
            proxy.port,
            timeout=None if deadline is None else max(0.0, deadline - loop.time()),
            family=family,
            local_address=local_address,
            resolver=resolver,
        )
    except ConnectError as error:
        # Same class, errno and attempts; the message also says what the address was for.
        prefix = f"cannot connect to {format_host_port(error.host, error.port)}: "
        reason = str(error).removeprefix(prefix)
        rebuilt = type(error)(
            error.host,
            error.port,
            error.attempts,
            errno=error.errno,
            reason=f"{reason} ({_TYPE_NAMES[proxy.type]} proxy for {target})",
        )
        raise rebuilt from error.__cause__ or error


def _timed_out(proxy: ProxySpec, target: str, timeout: float | None) -> ConnectTimeoutError:
    within = "" if timeout is None else f" within {timeout:g} s"
    return ConnectTimeoutError(
        proxy.host,
        proxy.port,
        [],
        errno=errno_codes.ETIMEDOUT,
        reason=f"no tunnel to {target} through the {_TYPE_NAMES[proxy.type]} proxy{within}",
    )


def _quote(text: str) -> str:
    """A peer-supplied phrase, printable and short, for a one-line message."""
    printable = "".join(char if char.isprintable() else "?" for char in text.strip())
    return printable if len(printable) <= _QUOTE_MAX else printable[:_QUOTE_MAX] + "..."


# --- SOCKS, through python-socks ---------------------------------------------------------


def _import_python_socks() -> None:
    """Fail early, with the fix in the message, where python-socks is missing."""
    try:
        import python_socks.async_.asyncio  # noqa: F401, PLC0415 (optional, and costly)
    except ImportError as error:
        raise ImportError(
            "a SOCKS proxy needs the python-socks package: pip install 'sockit[proxy]'",
            name=error.name,
        ) from error


class _ConnectedHop:
    """python-socks' ``forward`` protocol (the previous hop of a proxy chain, asked to
    connect to this proxy), answered with the socket already connected to it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    async def connect(
        self, dest_host: str, dest_port: int, timeout: float | None = None, **kwargs: object
    ) -> socket.socket:
        del dest_host, dest_port, timeout, kwargs  # the proxy's own address: known
        return self._sock


async def _socks_connect(
    sock: socket.socket,
    proxy: ProxySpec,
    host: str,
    port: int,
    target: str,
    *,
    remaining: float | None,
    timeout: float | None,
) -> None:
    from python_socks import ProxyError as SocksError  # noqa: PLC0415 (optional)
    from python_socks import ProxyTimeoutError, ProxyType  # noqa: PLC0415
    from python_socks.async_.asyncio import Proxy  # noqa: PLC0415

    client = Proxy(
        ProxyType.SOCKS4 if proxy.type == "socks4" else ProxyType.SOCKS5,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        # Every name that reaches this point is meant for the proxy (SOCKS4a or a SOCKS5
        # domain name): local resolution, when asked for, already happened.
        rdns=True,
        forward=cast("Proxy", _ConnectedHop(sock)),
    )
    try:
        tunnel = await client.connect(
            host, port, timeout=_NO_DEADLINE if remaining is None else remaining
        )
    except ProxyTimeoutError as error:
        raise _timed_out(proxy, target, timeout) from error
    except SocksError as error:
        raise _socks_refusal(proxy, target, error.error_code, str(error)) from error
    except OSError as error:
        raise ProxyError(
            proxy.address,
            target,
            f"the {proxy} failed during the handshake for {target}: {error.strerror or error}",
            errno=error.errno,
        ) from error
    if tunnel is not sock:  # pragma: no cover - python-socks changed its forward protocol
        tunnel.close()
        raise RuntimeError("python-socks returned another socket than the one it was given")


def _socks_refusal(proxy: ProxySpec, target: str, code: int | None, text: str) -> ProxyError:
    message = _quote(text)
    if proxy.type == "socks4" and code in _SOCKS4_IDENT_FAILURES:
        return ProxyAuthError(
            proxy.address,
            target,
            f"the {proxy} rejected user id {proxy.username!r} for {target}: {message}",
            errno=errno_codes.EACCES,
            reply=code,
        )
    if code is None and any(phrase in message.lower() for phrase in _SOCKS5_AUTH_MESSAGES):
        if proxy.username is None:
            detail = "it requires a user name and password (--proxy-auth)"
        else:
            detail = f"it rejected user {proxy.username!r}"
        return ProxyAuthError(
            proxy.address,
            target,
            f"the {proxy} refused the tunnel to {target}: {detail}",
            errno=errno_codes.EACCES,
        )
    errno_value = _SOCKS5_ERRNOS.get(code) if proxy.type == "socks5" and code else None
    return ProxyError(
        proxy.address,
        target,
        f"the {proxy} refused the tunnel to {target}: {message}",
        errno=errno_value,
        reply=code,
    )


# --- HTTP CONNECT ------------------------------------------------------------------------


async def _http_connect(
    sock: socket.socket, proxy: ProxySpec, host: str, port: int, target: str
) -> None:
    loop = asyncio.get_running_loop()
    authority = format_host_port(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None and proxy.password is not None:
        # surrogateescape: bytes that were not UTF-8 in argv go out as they came in.
        secret = f"{proxy.username}:{proxy.password}".encode("utf-8", "surrogateescape")
        lines.append(f"Proxy-Authorization: Basic {base64.b64encode(secret).decode('ascii')}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    try:
        await loop.sock_sendall(sock, request)
        head = await _read_head(sock, proxy, target)
    except ProxyError:
        raise
    except OSError as error:
        raise ProxyError(
            proxy.address,
            target,
            f"the {proxy} failed during the CONNECT for {target}: {error.strerror or error}",
            errno=error.errno,
        ) from error
    match = _STATUS_LINE.match(head)
    if match is None:
        first = head.split(b"\n", 1)[0].decode("latin-1")
        raise ProxyError(
            proxy.address,
            target,
            f"the {proxy} answered the CONNECT for {target} with no HTTP status line: "
            f"{_quote(first)!r}",
        )
    status = int(match.group(3))
    reason = _quote((match.group(4) or b"").decode("latin-1"))
    # RFC 9110 section 9.3.6: any 2xx means the tunnel starts after the blank line.
    if 200 <= status < 300:
        return
    answer = f"{status} {reason}".rstrip()
    if status == 407:
        challenge = _field(head, b"proxy-authenticate")
        if proxy.username is None:
            detail = "it requires credentials (--proxy-auth)"
        elif challenge and not challenge.lower().startswith(b"basic"):
            scheme = _quote(challenge.split(b" ", 1)[0].decode("latin-1"))
            detail = f"it wants {scheme} authentication; sockit sends Basic only"
        else:
            detail = f"it rejected user {proxy.username!r}"
        raise ProxyAuthError(
            proxy.address,
            target,
            f"the {proxy} refused the tunnel to {target}: {detail} ({answer})",
            errno=errno_codes.EACCES,
            reply=status,
        )
    raise ProxyError(
        proxy.address,
        target,
        f"the {proxy} refused the tunnel to {target}: {answer}",
        errno={403: errno_codes.EACCES, 504: errno_codes.ETIMEDOUT}.get(status),
        reply=status,
    )


async def _read_head(sock: socket.socket, proxy: ProxySpec, target: str) -> bytes:
    """The proxy's answer head, up to and including its blank line, and not one byte
    more: the bytes after it are the tunnel's and stay in the socket.

    Each round peeks at what arrived, finds the blank line (possibly straddling the
    previous round), and then receives exactly the head's part of it. Bounded by
    :data:`MAX_RESPONSE_HEAD` bytes; the caller's deadline bounds the time.
    """
    head = bytearray()
    while len(head) <= MAX_RESPONSE_HEAD:
        try:
            peeked = sock.recv(min(_PEEK_SIZE, MAX_RESPONSE_HEAD + 1 - len(head)), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            await wait_ready(sock.fileno())  # the caller's deadline bounds the wait
            continue
        if not peeked:
            raise ProxyError(
                proxy.address,
                target,
                f"the {proxy} closed the connection before answering the CONNECT for {target}",
                errno=errno_codes.ECONNRESET,
            )
        tail = bytes(head[-2:])
        end = _HEAD_END.search(tail + peeked)
        wanted = len(peeked) if end is None else end.end() - len(tail)
        chunk = sock.recv(wanted)
        head += chunk
        if end is not None and len(chunk) == wanted:
            return bytes(head)
    raise ProxyError(
        proxy.address,
        target,
        f"the {proxy} sent an answer head longer than {MAX_RESPONSE_HEAD} bytes for {target}",
    )


def _field(head: bytes, name: bytes) -> bytes | None:
    """The first value of header field ``name`` (lower case) in a response head."""
    for line in head.split(b"\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            return value.strip()
    return None
