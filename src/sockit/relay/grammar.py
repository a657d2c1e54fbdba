"""The relay's endpoint grammar: ``KIND:ADDRESS,option=value,...`` parsed, checked, pure.

===============================  =====================================================
``tcp:HOST:PORT``                connect (Happy Eyeballs); ``[v6]:PORT`` for literals
``tcp-listen:[HOST:]PORT``       listen (no host: IPv4 and IPv6 on one port), serve many
``udp:HOST:PORT``                connected UDP socket
``udp-listen:[HOST:]PORT``       UDP, one session (upstream leg) per peer address
``unix:PATH``                    connect to a UNIX stream socket (``@name``: abstract)
``unix-listen:PATH``             listen on a UNIX stream socket, serve many
``unix-dgram:PATH``              connected UNIX datagram socket
``stdio`` or ``-``               this process's stdin and stdout
``exec:PROGRAM ARGS``            a child per connection, argv split like a shell, no shell
``sh:COMMAND``                   a child per connection via ``/bin/sh -c``
``file:PATH``                    read the file (first endpoint) or write it (second)
===============================  =====================================================

Options follow the address after commas (``append`` alone is a flag, the rest need a value):

===============================  =====================================================
``bind=ADDR`` / ``bind=ADDR:P``  local address of a connecting endpoint
``proxy-protocol=v1|v2``         connecting: send a PROXY header naming the original
                                 client; listening: require one from the peer
``idle-timeout=S``               close a connection idle in both directions for S
                                 (UDP listen: expire a session idle for S)
``close-wait=S``                 after one direction's EOF, end the connection S later
``connect-timeout=S``            give up connecting after S
``max-conns=N``                  listening: at most N connections (UDP: sessions)
``mode=0600``                    ``unix-listen``: the socket file's permissions
``backlog=N``                    listening: the accept queue length
``append``                       ``file`` (written): append instead of truncating
===============================  =====================================================

Durations are seconds or ``500ms``, ``2s``, ``1m``, ``1h``. For ``exec:`` and ``sh:``
the command itself may contain commas: only trailing ``,name=value`` pieces whose name
is one of the options above are taken as options.

This module must never open a socket, resolve a name or touch a file: it only reads
text. Every error is an :class:`~sockit.errors.AddressError` (a ``ValueError``) whose
message names the endpoint and the bad part.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field

from sockit.addr import InetEndpoint, SocketAddress, parse_endpoint, parse_local_address
from sockit.errors import AddressError
from sockit.proto.timeouts import parse_duration

__all__ = ["KINDS", "EndpointOptions", "EndpointSpec", "parse_relay_endpoint"]

KINDS = (
    "tcp",
    "tcp-listen",
    "udp",
    "udp-listen",
    "unix",
    "unix-listen",
    "unix-dgram",
    "stdio",
    "exec",
    "sh",
    "file",
)
_ALIASES = {"-": "stdio", "tcp4": "tcp", "tcp6": "tcp", "system": "sh", "open": "file"}
_LISTENING = frozenset({"tcp-listen", "udp-listen", "unix-listen"})
_DATAGRAM = frozenset({"udp", "udp-listen", "unix-dgram"})
_SOCKET_KINDS = frozenset(
    {"tcp", "tcp-listen", "udp", "udp-listen", "unix", "unix-listen", "unix-dgram"}
)

# Which options each kind accepts; anything else is an error naming the option, so a
# typo ("idle-timout") is never silently ignored.
_COMMON = frozenset({"idle-timeout", "close-wait"})
_ALLOWED: dict[str, frozenset[str]] = {
    "tcp": _COMMON | {"bind", "proxy-protocol", "connect-timeout"},
    "tcp-listen": _COMMON | {"proxy-protocol", "max-conns", "backlog"},
    "udp": _COMMON | {"bind"},
    "udp-listen": _COMMON | {"max-conns"},
    "unix": _COMMON | {"proxy-protocol", "connect-timeout"},
    "unix-listen": _COMMON | {"proxy-protocol", "max-conns", "backlog", "mode"},
    "unix-dgram": _COMMON,
    "stdio": _COMMON,
    "exec": _COMMON,
    "sh": _COMMON,
    "file": _COMMON | {"append"},
}
_ALL_OPTIONS = frozenset().union(*_ALLOWED.values())
_FLAGS = frozenset({"append"})


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """The ``,name=value`` options of one endpoint, checked and converted.

    ``None`` means "not given" (the relay's default applies).
    """

    bind: SocketAddress | None = None
    proxy_protocol: int | None = None
    idle_timeout: float | None = None
    close_wait: float | None = None
    connect_timeout: float | None = None
    max_conns: int | None = None
    mode: int | None = None
    backlog: int | None = None
    append: bool = False


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One parsed endpoint. Which fields are set depends on ``kind``:

    * ``tcp``/``udp``/``*-listen`` (IP): ``host`` (``None`` = every local address,
      listening only) and ``port``;
    * ``unix``/``unix-listen``/``unix-dgram``/``file``: ``path``;
    * ``exec``/``sh``: ``argv`` (``sh`` is ``("/bin/sh", "-c", COMMAND)``).

    ``text`` is the endpoint as written, for messages.
    """

    kind: str
    text: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    argv: tuple[str, ...] = ()
    options: EndpointOptions = field(default_factory=EndpointOptions)

    @property
    def listening(self) -> bool:
        """True for ``*-listen`` endpoints: they accept many peers."""
        return self.kind in _LISTENING

    @property
    def datagram(self) -> bool:
        """True for ``udp``, ``udp-listen`` and ``unix-dgram``."""
        return self.kind in _DATAGRAM

    @property
    def is_socket(self) -> bool:
        """True for every socket kind (not stdio, exec, sh or file)."""
        return self.kind in _SOCKET_KINDS

    def __str__(self) -> str:
        return self.text


def parse_relay_endpoint(text: str) -> EndpointSpec:
    """Parse one relay endpoint (see the module docstring for the grammar).

    Raises:
        TypeError: ``text`` is not a ``str``.
        AddressError: the kind, address or an option is malformed; the message names
            the endpoint and the bad part.
        ResolutionError: a host name that cannot exist (too long, bad IDNA).
    """
    if not isinstance(text, str):
        raise TypeError(f"endpoint must be a str, not {type(text).__name__}")
    try:
        return _parse(text)
    except AddressError as error:
        raise AddressError(f"invalid relay endpoint {text!r}: {error}") from None


def _parse(text: str) -> EndpointSpec:
    if not text.strip():
        raise AddressError("empty endpoint")
    first, *stdio_options = text.split(",")
    if first.strip().lower() in {"stdio", "-"}:
        return EndpointSpec("stdio", text, options=_parse_options("stdio", stdio_options))
    if first.partition(":")[0].strip().lower() in {"stdio", "-"}:
        raise AddressError("stdio takes no address (write 'stdio' or '-')")
    head, sep, rest = text.partition(":")
    kind = _ALIASES.get(head.lower(), head.lower())
    if kind not in KINDS:
        raise AddressError(f"unknown kind {head!r} (expected one of {', '.join(KINDS)} or -)")
    if not sep:
        raise AddressError(f"{kind!r} needs an address after ':'")
    if kind in {"exec", "sh"}:
        return _parse_command(kind, text, rest)
    address, *option_texts = rest.split(",")
    options = _parse_options(kind, option_texts)
    if not address:
        raise AddressError(f"{kind!r} needs an address after ':'")
    if kind in {"unix", "unix-listen", "unix-dgram", "file"}:
        if kind != "file":
            parse_endpoint(f"unix:{address}")  # checks length, NUL, abstract support
        elif "\0" in address:
            raise AddressError("a file path cannot contain a NUL byte")
        return EndpointSpec(kind, text, path=address, options=options)
    listening = kind in _LISTENING
    if address.count(":") > 1 and not address.startswith("["):
        # tcp:::1:7000: the port is always last here, so an unbracketed IPv6 literal is
        # unambiguous (the benchmark kit writes tcp:{host}:{port} with host ::1).
        literal, _, port_text = address.rpartition(":")
        address = f"[{literal}]:{port_text}"
    try:
        endpoint = parse_endpoint(address)
    except AddressError as error:
        raise AddressError(str(error).removeprefix(f"invalid endpoint {address!r}: ")) from None
    if not isinstance(endpoint, InetEndpoint):
        raise AddressError(f"{kind!r} needs HOST:PORT, not a UNIX path {address!r}")
    if endpoint.host is None and not listening:
        raise AddressError(f"{kind!r} needs a host: {kind}:HOST:PORT")
    if endpoint.port == 0 and not listening:
        raise AddressError("cannot connect to port 0")
    return EndpointSpec(kind, text, host=endpoint.host, port=endpoint.port, options=options)


def _parse_command(kind: str, text: str, rest: str) -> EndpointSpec:
    # Trailing ",name=value" pieces with a known option name are options; the rest,
    # commas included, is the command.
    pieces = rest.split(",")
    option_texts: list[str] = []
    while len(pieces) > 1 and pieces[-1].partition("=")[0].strip().lower() in _ALL_OPTIONS:
        option_texts.insert(0, pieces.pop())
    command = ",".join(pieces)
    options = _parse_options(kind, option_texts)
    if "\0" in command:
        raise AddressError("a command cannot contain a NUL byte")
    if not command.strip():
        raise AddressError(f"{kind!r} needs a command")
    if kind == "sh":
        return EndpointSpec(kind, text, argv=("/bin/sh", "-c", command), options=options)
    try:
        argv = tuple(shlex.split(command))
    except ValueError as error:
        raise AddressError(f"cannot split the command {command!r}: {error}") from None
    if not argv:
        raise AddressError(f"{kind!r} needs a command")
    return EndpointSpec(kind, text, argv=argv, options=options)


def _parse_options(kind: str, texts: list[str]) -> EndpointOptions:
    allowed = _ALLOWED[kind]
    values: dict[str, object] = {}
    for raw in texts:
        name, has_value, value = raw.partition("=")
        name = name.strip().lower()
        if not name:
            raise AddressError("empty option (two commas in a row?)")
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise AddressError(f"option {name!r} does not apply to {kind!r} (it takes: {known})")
        if not has_value and name not in _FLAGS:
            raise AddressError(f"option {name!r} needs a value ({name}=...)")
        attribute = name.replace("-", "_")
        if attribute in values:
            raise AddressError(f"option {name!r} given twice")
        values[attribute] = _convert(name, value.strip() if has_value else "1")
    return dataclasses.replace(EndpointOptions(), **values)  # type: ignore[arg-type]


def _convert(name: str, value: str) -> object:
    try:
        if name == "bind":
            return _bind_address(value)
        if name == "proxy-protocol":
            version = {"v1": 1, "1": 1, "v2": 2, "2": 2}.get(value.lower())
            if version is None:
                raise ValueError(f"expected v1 or v2, not {value!r}")
            return version
        if name in {"idle-timeout", "close-wait", "connect-timeout"}:
            seconds = parse_duration(value)
            if seconds == 0 and name != "close-wait":
                raise ValueError("must be more than 0 (leave the option out for no limit)")
            return seconds
        if name in {"max-conns", "backlog"}:
            number = int(value, 10)
            if number < 1:
                raise ValueError(f"must be at least 1, not {number}")
            return number
        if name == "mode":
            mode = int(value, 8)
            if not 0 <= mode <= 0o7777:
                raise ValueError(f"not a permission mode: {value!r}")
            return mode
        if name == "append":
            if value.lower() not in {"1", "yes", "true", "0", "no", "false"}:
                raise ValueError(f"expected yes or no, not {value!r}")
            return value.lower() in {"1", "yes", "true"}
    except (ValueError, AddressError) as error:
        raise AddressError(f"option {name}={value!r}: {error}") from None
    raise AssertionError(name)  # pragma: no cover (every allowed name is converted)


def _bind_address(value: str) -> SocketAddress:
    host, port = value, 0
    if value.startswith("["):
        literal, closed, tail = value[1:].partition("]")
        if not closed:
            raise ValueError(f"missing ']' in {value!r}")
        host = literal
        if tail:
            if not tail.startswith(":"):
                raise ValueError(f"expected [ADDR]:PORT, not {value!r}")
            port = int(tail[1:], 10)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = int(port_text, 10)
    local = parse_local_address((host, port))
    if local is None:  # pragma: no cover (a pair is never None)
        raise ValueError("no address")
    return local
