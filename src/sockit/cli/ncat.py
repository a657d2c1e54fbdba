"""``sockit [options] [hostname] [port]``: ncat's command line, on sockit's relay engine.

Parsing and wiring only: the legs, the pump and its EOF rules live in
:mod:`sockit.relay`. ncat's options keep ncat's meanings and exit codes (0 success, 1
network error with one line naming the address, 2 usage error). The EOF model (ncat
7.96+), as :class:`~sockit.relay.pump.DirectionOptions` of the pump:

======================  ==========================================================
connect mode, TCP/UNIX  stdin EOF -> ``shutdown(SHUT_WR)``, keep receiving; socket EOF
                        ends the program (``-k``: keeps it running until stdin EOF)
``--no-shutdown``       stdin EOF leaves the socket fully open
``-q SECS``             quit SECS after stdin EOF
``--send-only``         received data is dropped (the socket's EOF does not end an
                        upload); quit once stdin EOF is sent
``--recv-only``         stdin is never read (and the socket never half-closed)
UDP                     stdin EOF ends nothing (UDP has no EOF) unless ``-q`` or
                        ``--send-only``
listen, no ``-k``       one client; exit when both directions have ended
listen, ``-k``          stdin to every client (read while one is connected), clients
                        to stdout; stdin EOF half-closes every client, also later ones;
                        the flags above apply (``--send-only``: exit once stdin EOF
                        reached every client; ``-q``: SECS after stdin EOF)
======================  ==========================================================

A reset peer is never a clean end: exit status 1. A server (``-l -k``, ``--broker``,
an HTTP proxy) stopped by SIGINT or SIGTERM exits 0, like ``sockit serve``; a transfer
interrupted by them exits 130 (it did not complete).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockit.cli._common import Parser, UsageError
from sockit.cli.main import EXIT_NETWORK_ERROR, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from sockit.addr import SocketAddress
    from sockit.proto.access import AccessPolicy
    from sockit.relay.proxy_client import ProxySpec
    from sockit.relay.pump import Leg, PumpResult

__all__ = ["DEFAULT_LISTEN_PORT", "build_ncat_parser", "run_ncat"]

DEFAULT_LISTEN_PORT = 31337
"""ncat's port for ``-l`` without one."""

_PROG = "sockit"
_EXIT_INTERRUPTED = 130
_UNSUPPORTED = {
    "sctp": "--sctp",
    "vsock": "--vsock",
    "lua_exec": "--lua-exec",
    "source_route": "-g",
    "source_route_pointer": "-G",
}
_TLS_OPTIONS = (
    "--ssl",
    "--ssl-cert",
    "--ssl-key",
    "--ssl-verify",
    "--ssl-trustfile",
    "--ssl-ciphers",
    "--ssl-servername",
    "--ssl-alpn",
)


def build_ncat_parser() -> argparse.ArgumentParser:
    """The parser of ncat mode: ``sockit [options] [hostname] [port]``."""
    import argparse  # noqa: PLC0415 (lazy: start-up time)

    parser = Parser(
        prog=_PROG,
        usage="%(prog)s [options] [hostname] [port]\n       %(prog)s {demo,relay,serve} ...",
        description=(
            "Connect to HOST PORT, or listen with -l, relaying stdin and stdout (ncat's "
            "options and exit codes). Subcommands: demo, relay, serve."
        ),
        epilog=(
            "Times take ms, s, m or h (500ms, 2s). Exit codes: 0 success, 1 network error, "
            "2 usage error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("host", nargs="?", metavar="hostname")
    add("port", nargs="?", metavar="port")
    add("-4", dest="ipv4", action="store_true", help="use IPv4 only")
    add("-6", dest="ipv6", action="store_true", help="use IPv6 only")
    add("-U", "--unixsock", action="store_true", help="use UNIX domain sockets only")
    add("-u", "--udp", action="store_true", help="use UDP instead of TCP")
    add("-l", "--listen", action="store_true", help="bind and listen for connections")
    add("-k", "--keep-open", action="store_true", help="accept several connections")
    add("-m", "--max-conns", type=int, default=None, metavar="N", help="at most N at once")
    add("-p", "--source-port", metavar="PORT", help="source port (listen: the port)")
    add("-s", "--source", metavar="ADDR", help="source address (listen: the address)")
    add("-n", "--nodns", action="store_true", help="do not resolve host names")
    add("-w", "--wait", metavar="TIME", help="connect timeout")
    add("-i", "--idle-timeout", metavar="TIME", help="idle read/write timeout")
    add("-d", "--delay", metavar="TIME", help="wait between reads/writes")
    add("-q", dest="quit_after", metavar="TIME", help="quit TIME after EOF on stdin")
    add("-C", "--crlf", action="store_true", help="send CRLF for LF")
    add("-t", "--telnet", action="store_true", help="answer Telnet negotiations (refuse)")
    add("-z", dest="scan", action="store_true", help="report open ports, send no data")
    add("-v", "--verbose", action="count", default=0, help="more messages (repeatable)")
    add("-o", "--output", metavar="FILE", help="write session data to FILE")
    add("-x", "--hex-dump", metavar="FILE", help="write session data as hex to FILE")
    add("--append-output", action="store_true", help="append to -o/-x files")
    add("--send-only", action="store_true", help="only send data, ignore what arrives")
    add("--recv-only", action="store_true", help="only receive data, never read stdin")
    add("--no-shutdown", action="store_true", help="no half-close on stdin EOF")
    add("-e", "--exec", dest="exec_command", metavar="CMD", help="run CMD (no shell)")
    add("-c", "--sh-exec", dest="sh_command", metavar="CMD", help="run CMD with /bin/sh")
    add("--allow", action="append", metavar="HOST", help="only accept these peers")
    add("--allowfile", action="append", metavar="FILE", help="peers to allow, from FILE")
    add("--deny", action="append", metavar="HOST", help="refuse these peers")
    add("--denyfile", action="append", metavar="FILE", help="peers to refuse, from FILE")
    add("--broker", action="store_true", help="relay every client's data to the others")
    add("--chat", action="store_true", help="broker with user tags")
    add("--proxy", metavar="ADDR[:PORT]", help="connect through this proxy")
    add("--proxy-type", metavar="TYPE", help="socks4, socks5 or http")
    add("--proxy-auth", metavar="USER:PASS", help="proxy credentials")
    add("--proxy-dns", metavar="TYPE", help="local, remote, both or none")
    add("--trace", action="store_true", help="show each socket operation")
    add("--log-format", choices=("text", "json"), default="text", help="stderr format")
    add("--buffer-size", type=int, metavar="BYTES", help="copy buffer size")
    add("--no-splice", action="store_true", help="copy instead of splice(2)")
    for name, flag in _UNSUPPORTED.items():
        if flag.startswith("--"):
            add(flag, dest=name, nargs="?", const=True, default=None, help=argparse.SUPPRESS)
        else:
            add(flag, dest=name, default=None, help=argparse.SUPPRESS)
    for flag in _TLS_OPTIONS:
        dest = "tls_" + flag.removeprefix("--ssl").replace("-", "_").strip("_")
        add(flag, dest=dest, nargs="?", const=True, default=None, help=argparse.SUPPRESS)
    return parser


@dataclass
class _Plan:
    args: argparse.Namespace
    listen: bool
    host: str | None
    port: int | None
    path: str | None
    family: int | None
    connect_timeout: float | None
    idle_timeout: float | None
    quit_after: float | None
    delay: float | None
    access: AccessPolicy | None
    proxy: ProxySpec | None
    proxy_server_auth: tuple[str, str] | None

    def admit(self, address: SocketAddress) -> bool:
        """The allow/deny policy for a listening mode's peer (``-v`` tells a denial)."""
        if self.access is None or address.is_unix or self.access.permits(address.host):
            return True
        _say(self, 1, f"New connection from {address} denied: not allowed.")
        return False


def run_ncat(argv: Sequence[str]) -> int:
    """Run ncat mode with ``argv``; the exit code."""
    from sockit.errors import AddressError  # noqa: PLC0415 (lazy: start-up time)

    parser = build_ncat_parser()
    try:
        args = parser.parse_intermixed_args(list(argv))
        plan = _plan(args)
    except (UsageError, AddressError, ValueError) as error:
        sys.stderr.write(f"{_PROG}: error: {error} (see '{_PROG} --help')\n")
        return EXIT_USAGE
    _log_to_stderr(args)
    from sockit.relay.runner import raise_fd_limit  # noqa: PLC0415

    raise_fd_limit()
    return _run(plan)


def _plan(args: argparse.Namespace) -> _Plan:
    import socket  # noqa: PLC0415

    from sockit.addr import parse_port  # noqa: PLC0415
    from sockit.proto.timeouts import parse_duration  # noqa: PLC0415

    for name, flag in _UNSUPPORTED.items():
        if getattr(args, name) is not None:
            raise UsageError(f"{flag} is not supported")
    if any(value is not None for key, value in vars(args).items() if key.startswith("tls_")):
        raise UsageError("TLS is not available yet (--ssl options)")
    if args.chat:
        args.broker = True  # ncat: --chat is a broker with user tags
    if args.broker:
        args.listen = args.keep_open = True  # ncat: --broker implies -l -k
    proxy = _proxy(args)
    if args.proxy_type is not None and args.listen and args.proxy_type.lower() != "http":
        raise UsageError("a listening proxy is an HTTP proxy: --proxy-type http")
    if args.proxy_type is not None and not args.listen and proxy is None:
        raise UsageError("--proxy-type without --proxy or -l does nothing")
    if args.proxy_dns is not None and proxy is None:
        raise UsageError("--proxy-dns needs --proxy")
    if args.ipv4 and args.ipv6:
        raise UsageError("-4 and -6 contradict each other")
    if args.send_only and args.recv_only:
        raise UsageError("--send-only and --recv-only contradict each other")
    if args.exec_command is not None and args.sh_command is not None:
        raise UsageError("give -e or -c, not both")
    if args.max_conns is not None and args.max_conns < 1:
        raise UsageError("-m needs a positive number")
    if args.buffer_size is not None and args.buffer_size < 1:
        raise UsageError("--buffer-size needs a positive number of bytes")
    family = socket.AF_INET if args.ipv4 else socket.AF_INET6 if args.ipv6 else None
    host, port_text = args.host, args.port
    path = None
    if args.unixsock:
        if args.udp:
            raise UsageError("UNIX datagram sockets (-U -u) are not available yet")
        if host is None:
            raise UsageError("-U needs a socket path")
        if port_text is not None:
            raise UsageError("-U takes a path, not a port")
        path, host = host, None
    port: int | None = None
    if args.listen:
        # ncat: "-l [host] [port]"; a lone argument is the port.
        if port_text is None and host is not None and path is None:
            host, port_text = None, host
        if args.source is not None:
            host = host or args.source
        if args.source_port is not None:
            port_text = port_text or args.source_port
        if path is None:
            port = parse_port(port_text) if port_text is not None else DEFAULT_LISTEN_PORT
    elif args.scan:
        if host is None or port_text is None:
            raise UsageError("-z needs a host and ports (e.g. 20-25,80)")
    elif path is None:
        if host is None:
            raise UsageError("you must give a host to connect to (or -l to listen)")
        if port_text is None:
            raise UsageError("you must give a port to connect to")
        port = parse_port(port_text)
        if port == 0:
            raise UsageError("cannot connect to port 0")
    if args.nodns and host is not None:
        from sockit.addr import is_ip_literal  # noqa: PLC0415

        if not is_ip_literal(host):
            raise UsageError(f"-n: {host!r} is not a numeric address")
    access = _access_policy(args)
    if access is not None and (not args.listen or path is not None):
        raise UsageError("--allow/--deny (and their files) apply to TCP and UDP listen modes")
    return _Plan(
        args=args,
        listen=args.listen,
        host=host,
        port=port,
        path=path,
        family=family,
        connect_timeout=None if args.wait is None else parse_duration(args.wait),
        idle_timeout=None if args.idle_timeout is None else parse_duration(args.idle_timeout),
        quit_after=None if args.quit_after is None else parse_duration(args.quit_after),
        delay=None if args.delay is None else parse_duration(args.delay),
        access=access,
        proxy=proxy,
        proxy_server_auth=_proxy_credentials(args) if args.listen and args.proxy_type else None,
    )


def _proxy(args: argparse.Namespace) -> ProxySpec | None:
    """``--proxy`` and its options (ncat's meanings; ``NCAT_PROXY_AUTH`` as the
    credentials' fallback, so they stay out of ``ps``); ``None`` without ``--proxy``."""
    if args.proxy is None:
        return None
    if args.listen:
        raise UsageError("--proxy connects through a proxy: it does not combine with -l")
    if args.udp or args.unixsock or args.scan:
        raise UsageError("--proxy carries TCP connections only (not -u, -U or -z)")
    import os  # noqa: PLC0415

    from sockit.relay.proxy_client import parse_proxy  # noqa: PLC0415

    return parse_proxy(
        args.proxy,
        args.proxy_type,
        args.proxy_auth,
        args.proxy_dns,
        env_auth=os.environ.get("NCAT_PROXY_AUTH"),
    )


def _access_policy(args: argparse.Namespace) -> AccessPolicy | None:
    """``--allow``/``--deny`` (comma lists of addresses, networks or host names) and
    ``--allowfile``/``--denyfile``, as one policy; ``None`` without any."""
    if not (args.allow or args.allowfile or args.deny or args.denyfile):
        return None
    from sockit.proto.access import AccessPolicy, read_access_file  # noqa: PLC0415

    def entries(hosts: list[str] | None, files: list[str] | None) -> list[str]:
        result = [entry for text in hosts or () for entry in _access_entries(text, args)]
        for path in files or ():
            try:
                result.extend(read_access_file(path))
            except OSError as error:
                raise UsageError(f"cannot read {path}: {error.strerror or error}") from error
        return result

    allow = entries(args.allow, args.allowfile) if args.allow or args.allowfile else None
    return AccessPolicy(allow, entries(args.deny, args.denyfile))


def _access_entries(text: str, args: argparse.Namespace) -> list[str]:
    """One ``--allow``/``--deny`` value: addresses and networks as they are, host names
    resolved now to every address they have (ncat's way), unless ``-n``."""
    import ipaddress  # noqa: PLC0415
    import socket  # noqa: PLC0415

    result: list[str] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            from sockit.addr import check_host  # noqa: PLC0415
            from sockit.errors import AddressError  # noqa: PLC0415

            try:
                check_host(entry)
            except AddressError:
                raise UsageError(f"{entry!r} is not an IP address, network or host name") from None
            if args.nodns:
                raise UsageError(f"-n: {entry!r} is not an IP address or network") from None
            try:
                infos = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
            except socket.gaierror as error:
                raise UsageError(f"cannot resolve {entry!r}: {error.strerror}") from None
            result.extend(str(info[4][0]) for info in infos)
        else:
            result.append(entry)
    return result


_log = logging.getLogger("sockit.ncat")


def _log_to_stderr(args: argparse.Namespace) -> None:
    """Everything ncat mode says goes to stderr in ``--log-format`` (text: ``sockit:
    message``, ncat's lines; json: one object per line): its own messages and errors,
    the relay layer's warnings, and with ``--trace`` the socket operations."""
    from sockit.cli._common import add_log_handler  # noqa: PLC0415

    for name, prog, level in (
        ("sockit.ncat", _PROG, logging.INFO),
        ("sockit.relay", _PROG, logging.WARNING),
        ("sockit.trace", f"{_PROG}: trace", logging.DEBUG if args.trace else logging.CRITICAL),
    ):
        add_log_handler(
            logging.getLogger(name),
            prog=prog,
            level=level,
            log_format=args.log_format,
            stream=sys.stderr,
        )


def _say(plan: _Plan, level: int, message: str) -> None:
    """A ``-v`` message on stderr (``level``: how many -v it needs)."""
    if plan.args.verbose >= level:
        _log.info("%s", message, extra={"event": "verbose"})


def _trace(plan: _Plan, text: str) -> None:
    """A ``--trace`` line (the ``sockit.trace`` logger the relay layer also writes to)."""
    if plan.args.trace:
        logging.getLogger("sockit.trace").debug("%s", text, extra={"event": "trace"})


def _listening(plan: _Plan, addresses: Sequence[object]) -> None:
    """The "Listening on" line per bound address (port 0: always, with the real port)."""
    for address in addresses:
        _trace(plan, f"listen {address}")
        _say(plan, 0 if plan.port == 0 else 1, f"Listening on {address}")


def _error(message: str) -> int:
    """The one line of a network error; the exit code for it."""
    _log.error("%s", message, extra={"event": "error"})
    return EXIT_NETWORK_ERROR


def _run(plan: _Plan) -> int:
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from sockit._version import __version__  # noqa: PLC0415
    from sockit.aio._loop import run as run_loop  # noqa: PLC0415
    from sockit.errors import ConnectError, ProxyError, ResolutionError  # noqa: PLC0415

    _say(plan, 1, f"Version {__version__} ( sockit, ncat-compatible )")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        if plan.args.scan:
            return await _scan(plan)
        if plan.listen:
            return await _listen(plan)
        return await _connect(plan)

    try:
        return run_loop(main())
    except asyncio.CancelledError:
        return _EXIT_INTERRUPTED
    except (ResolutionError, ProxyError) as error:
        return _error(str(error))
    except ConnectError as error:
        return _error(f"{_reason(error)}: {error.host}:{error.port}.")
    except TimeoutError as error:
        return _error(str(error) or "timed out")
    except OSError as error:
        where = plan.path or (f"{plan.host}:{plan.port}" if plan.host else f"port {plan.port}")
        return _error(f"{error.strerror or error}: {where}.")


def _reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(error, TimeoutError):
        return "Connection timed out"
    return error.strerror or "Connection failed"


# --- connect mode ------------------------------------------------------------------------


async def _connect(plan: _Plan) -> int:
    from sockit.relay.grammar import EndpointOptions, EndpointSpec  # noqa: PLC0415
    from sockit.relay.legs import open_leg  # noqa: PLC0415

    args = plan.args
    bind = None
    if args.source is not None or args.source_port is not None:
        from sockit.addr import parse_local_address, parse_port  # noqa: PLC0415

        port = 0 if args.source_port is None else parse_port(args.source_port)
        bind = parse_local_address((args.source or _any_address(plan), port), family=plan.family)
    options = EndpointOptions(bind=bind, connect_timeout=plan.connect_timeout)
    if plan.path is not None:
        spec = EndpointSpec("unix", f"unix:{plan.path}", path=plan.path, options=options)
    else:
        kind = "udp" if args.udp else "tcp"
        spec = EndpointSpec(
            kind, f"{kind}:{plan.host}:{plan.port}", plan.host, plan.port, options=options
        )
    if plan.proxy is not None:
        remote = await _connect_via_proxy(plan, bind)
        from sockit.addr import format_host_port  # noqa: PLC0415

        target = format_host_port(plan.host or "", plan.port or 0)
        _say(plan, 1, f"Connected to {target} through the {plan.proxy}.")
    else:
        remote = await open_leg(spec, first=False, family=plan.family)
        _say(plan, 1, f"Connected to {_peer(remote)}.")
    _say(plan, 2, f"Connection {remote.describe()}.")
    local = await _local_leg(plan, remote)
    return await _pump(plan, local, remote, connect_mode=True)


async def _connect_via_proxy(plan: _Plan, bind: SocketAddress | None) -> Leg:
    """The tunnel through ``--proxy`` to the target, as a socket leg (its peer: the
    proxy, the address this socket really reached)."""
    from sockit.relay.proxy_client import connect_via_proxy  # noqa: PLC0415
    from sockit.relay.pump import SocketLeg  # noqa: PLC0415

    assert plan.proxy is not None  # noqa: S101
    assert plan.host is not None  # noqa: S101
    assert plan.port is not None  # noqa: S101
    _trace(plan, f"proxy {plan.proxy.type} {plan.proxy.address} for {plan.host}:{plan.port}")
    sock, proxy_address = await connect_via_proxy(
        plan.proxy,
        plan.host,
        plan.port,
        timeout=plan.connect_timeout,
        family=plan.family,
        local_address=None if bind is None else (bind.host, bind.port),
    )
    leg = SocketLeg(sock, f"tcp:{plan.host}:{plan.port}")
    leg.set_addresses(None, proxy_address)
    _trace(plan, f"tunnel to {plan.host}:{plan.port} open")
    return leg


def _any_address(plan: _Plan) -> str:
    import socket  # noqa: PLC0415

    return "::" if plan.family == socket.AF_INET6 else "0.0.0.0"


async def _local_leg(plan: _Plan, peer: Leg) -> Leg:
    """stdin/stdout, or the -e/-c child."""
    from sockit.relay.grammar import EndpointSpec  # noqa: PLC0415
    from sockit.relay.legs import StdioLeg, spawn_child  # noqa: PLC0415

    args = plan.args
    if args.exec_command is not None:
        import shlex  # noqa: PLC0415

        argv = tuple(shlex.split(args.exec_command))
        return spawn_child(EndpointSpec("exec", "exec", argv=argv), peer, kill_grace=2.0)
    if args.sh_command is not None:
        spec = EndpointSpec("sh", "sh", argv=("/bin/sh", "-c", args.sh_command))
        return spawn_child(spec, peer, kill_grace=2.0)
    return StdioLeg()


async def _pump(plan: _Plan, local: Leg, remote: Leg, *, connect_mode: bool) -> int:
    """Pump with ncat's EOF rules (see the module docstring); the exit code."""
    from sockit.relay.pump import DirectionOptions, Pump  # noqa: PLC0415

    args = plan.args
    exec_mode = args.exec_command is not None or args.sh_command is not None
    udp = remote.datagram
    # local -> remote (stdin to the socket)
    forward = DirectionOptions(
        eof="keep" if args.no_shutdown else ("end" if args.send_only else "shutdown"),
        quit_after_eof=plan.quit_after,
        enabled=not args.recv_only or exec_mode,
        transform=_crlf() if args.crlf and not exec_mode else None,
        read_size=args.buffer_size,
        delay=plan.delay,
    )
    # remote -> local (the socket to stdout)
    # --send-only never reads what arrives (ncat's way), so the peer's EOF does not cut
    # an upload short: the program ends once stdin's EOF is sent.
    socket_eof_ends = (
        connect_mode and not args.keep_open and not exec_mode and not udp and not args.send_only
    )
    backward = DirectionOptions(
        eof="end" if socket_eof_ends else "shutdown",
        discard=args.send_only and not exec_mode,
        transform=_telnet(remote) if args.telnet else None,
        read_size=args.buffer_size,
        delay=plan.delay,
    )
    tap = _session_log(plan)
    on_event = None
    if args.trace:
        from sockit.relay.runner import trace_pump_event  # noqa: PLC0415

        on_event = trace_pump_event
    pump = Pump(
        local,
        remote,
        idle_timeout=plan.idle_timeout,
        splice=not args.no_splice,
        forward=forward,
        backward=backward,
        tap=tap,
        on_event=on_event,
    )
    result = await pump.run()
    if tap is not None:
        tap.close()
    _say(
        plan,
        1,
        f"{result.sent_a_to_b} bytes sent, {result.sent_b_to_a} bytes received in "
        f"{result.duration:.2f} seconds.",
    )
    return _status(plan, result)


def _status(plan: _Plan, result: PumpResult) -> int:
    if result.outcome == "reset":
        reason = "reset" if result.error is None else (result.error.strerror or "error")
        return _error(f"{result.failed_leg}: {reason}.")
    if result.outcome == "idle":
        return _error(f"Idle timeout expired ({plan.idle_timeout:g} s).")
    return EXIT_OK


def _crlf() -> Callable[[bytes], bytes]:
    from sockit.proto.lineends import CrlfEncoder  # noqa: PLC0415

    return CrlfEncoder().feed


def _telnet(remote: Leg) -> Callable[[bytes], bytes]:
    from sockit.proto.telnet import TelnetFilter  # noqa: PLC0415
    from sockit.relay.pump import SocketLeg  # noqa: PLC0415

    telnet = TelnetFilter()

    def transform(data: bytes) -> bytes:
        user, replies = telnet.feed(data)
        if replies and isinstance(remote, SocketLeg):
            # Refusals are a few bytes on a socket with room: sent at once.
            remote.sock.send(replies)
        return user

    return transform


class _SessionLog:
    """``-o``/``-x``: every byte of the session to a file (raw or ncat's hex dump)."""

    def __init__(self, output: str | None, hex_dump: str | None, *, append: bool) -> None:
        self.files: list[tuple[int, object | None]] = []
        self.raw = _open_log(output, append=append) if output else -1
        self.hex = _open_log(hex_dump, append=append) if hex_dump else -1
        from sockit.proto.hexdump import HexDumper  # noqa: PLC0415

        self.dumper = HexDumper()

    def __call__(self, index: int, data: bytes) -> None:
        import os  # noqa: PLC0415

        if self.raw >= 0:
            os.write(self.raw, data)
        if self.hex >= 0:
            text = self.dumper.feed(data, "sent" if index == 0 else "received")
            os.write(self.hex, text.encode("ascii"))

    def close(self) -> None:
        import os  # noqa: PLC0415

        for fd in (self.raw, self.hex):
            if fd >= 0:
                os.close(fd)
        self.raw = self.hex = -1


def _open_log(path: str, *, append: bool) -> int:
    """Open a session log without following a symlink at ``path`` (O_NOFOLLOW)."""
    import os  # noqa: PLC0415

    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    flags |= os.O_APPEND if append else os.O_TRUNC
    return os.open(path, flags, 0o600)


def _session_log(plan: _Plan) -> _SessionLog | None:
    args = plan.args
    if args.output is None and args.hex_dump is None:
        return None
    return _SessionLog(args.output, args.hex_dump, append=args.append_output)


def _peer(leg: Leg) -> str:
    remote = leg.remote_address
    if remote is None:
        return leg.name
    return remote.path or "" if remote.is_unix else str(remote)


# --- listen mode -------------------------------------------------------------------------


async def _listen(plan: _Plan) -> int:
    args = plan.args
    exec_mode = args.exec_command is not None or args.sh_command is not None
    if args.udp:
        return await _listen_udp(plan)
    if args.proxy_type is not None:
        return await _listen_http_proxy(plan)
    if args.keep_open:
        if not exec_mode:
            return await _listen_hub(plan)
        return await _listen_many_exec(plan)
    return await _listen_once(plan)


def _listen_spec(plan: _Plan) -> str:
    if plan.path is not None:
        return f"unix-listen:{plan.path}"
    host = plan.host
    if host is None and plan.family is not None:
        host = _any_address(plan)
    if host is None:
        return f"tcp-listen:{plan.port}"
    return f"tcp-listen:[{host}]:{plan.port}" if ":" in host else f"tcp-listen:{host}:{plan.port}"


async def _listen_once(plan: _Plan) -> int:
    from sockit.relay.grammar import parse_relay_endpoint  # noqa: PLC0415
    from sockit.relay.runner import accept_leg, listen_on  # noqa: PLC0415

    listener = listen_on(parse_relay_endpoint(_listen_spec(plan)))
    try:
        _listening(plan, listener.addresses)
        client = await accept_leg(listener, admit=plan.admit)
    finally:
        listener.close()
    _trace(plan, f"accept {client.describe()}")
    _say(plan, 1, f"Connection from {_peer(client)}.")
    _say(plan, 2, f"Connection {client.describe()}.")
    local = await _local_leg(plan, client)
    return await _pump(plan, local, client, connect_mode=False)


def _proxy_credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    """The listening HTTP proxy's credentials: ``--proxy-auth USER:PASS``, else
    ``NCAT_PROXY_AUTH`` (keeps them out of ``ps``)."""
    import os  # noqa: PLC0415

    text = args.proxy_auth or os.environ.get("NCAT_PROXY_AUTH")
    if not text:
        return None
    user, colon, password = text.partition(":")
    if not colon:
        raise UsageError("--proxy-auth needs USER:PASS")
    return user, password


async def _listen_http_proxy(plan: _Plan) -> int:
    """``-l --proxy-type http``: an HTTP proxy (CONNECT and forwarding) until stopped."""
    import asyncio  # noqa: PLC0415

    from sockit.relay.http_proxy import HTTPProxyServer  # noqa: PLC0415

    server = HTTPProxyServer(
        plan.host,
        plan.port or 0,
        auth=plan.proxy_server_auth,
        max_conns=plan.args.max_conns or 100,
        admit=plan.admit,
    )
    _listening(plan, await server.start())
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()
    finally:
        await server.aclose()
    return EXIT_OK


async def _listen_hub(plan: _Plan) -> int:
    """``-l -k``: stdin to every client, every client to stdout (``--broker``: clients
    to each other), until interrupted."""
    import asyncio  # noqa: PLC0415

    from sockit.relay.grammar import parse_relay_endpoint  # noqa: PLC0415
    from sockit.relay.hub import Hub  # noqa: PLC0415
    from sockit.relay.legs import StdioLeg  # noqa: PLC0415
    from sockit.relay.runner import listen_on  # noqa: PLC0415

    listener = listen_on(parse_relay_endpoint(_listen_spec(plan)))
    local = StdioLeg()
    try:
        _listening(plan, listener.addresses)
        hub = Hub(
            listener,
            local,
            max_conns=plan.args.max_conns or 100,
            broker=plan.args.broker,
            chat=plan.args.chat,
            admit=plan.admit,
            on_connect=lambda address: _accepted(plan, address),
            on_disconnect=lambda address: _closed(plan, address),
            local_input=not plan.args.recv_only,
            half_close=not plan.args.no_shutdown,
            discard_clients=plan.args.send_only,
            end_on_local_eof=plan.args.send_only,
            quit_after_eof=plan.quit_after,
        )
        with contextlib.suppress(asyncio.CancelledError):
            await hub.run()
    finally:
        local.close()
        listener.close()
    return EXIT_OK


def _accepted(plan: _Plan, address: SocketAddress) -> None:
    _trace(plan, f"accept {address}")
    _say(plan, 1, f"Connection from {address}.")


def _closed(plan: _Plan, address: SocketAddress) -> None:
    _trace(plan, f"close {address}")
    _say(plan, 2, f"Connection from {address} closed.")


async def _listen_many_exec(plan: _Plan) -> int:
    import asyncio  # noqa: PLC0415

    from sockit.relay.runner import Relay  # noqa: PLC0415

    args = plan.args
    if args.exec_command is not None:
        target = f"exec:{args.exec_command}"
    else:
        target = f"sh:{args.sh_command}"
    source = _listen_spec(plan) + f",max-conns={args.max_conns or 100}"
    if plan.idle_timeout is not None:
        source += f",idle-timeout={plan.idle_timeout}"
    from sockit.relay.grammar import parse_relay_endpoint  # noqa: PLC0415

    relay = Relay(parse_relay_endpoint(source), parse_relay_endpoint(target), admit=plan.admit)
    _listening(plan, await relay.start())
    try:
        await relay.run()
    except asyncio.CancelledError:
        return EXIT_OK
    return EXIT_OK


async def _listen_udp(plan: _Plan) -> int:
    """UDP listen: the first datagram's sender (that the allow/deny policy admits)
    becomes the peer (ncat's way)."""
    import socket  # noqa: PLC0415

    from sockit.addr import SocketAddress, check_host  # noqa: PLC0415
    from sockit.addr.datagram import bind_first, bind_wildcard  # noqa: PLC0415
    from sockit.aio._resolve import resolve  # noqa: PLC0415
    from sockit.aio._wait import wait_ready  # noqa: PLC0415
    from sockit.relay.pump import SocketLeg  # noqa: PLC0415

    def own(sock: socket.socket) -> socket.socket:
        return sock

    family = plan.family or 0
    port = plan.port or 0
    if plan.host is None:
        sock = bind_wildcard(socket.socket, own, port, family, reuse_port=False)
    else:
        infos = await resolve(
            None,
            check_host(plan.host),
            port,
            family=family,
            type=socket.SOCK_DGRAM,
            flags=socket.AI_PASSIVE,
            display_host=plan.host,
        )
        sock = bind_first(socket.socket, own, plan.host, infos, family, reuse_port=False)
    try:
        sock.setblocking(False)
        _listening(plan, [SocketAddress.from_sockaddr(sock.family, sock.getsockname())])
        while True:  # the first sender the allow/deny policy admits becomes the peer
            try:
                # Peeked, not taken: the pump then reads that datagram like every later
                # one (--send-only drops it, -o logs it, the byte count includes it).
                _, sender = sock.recvfrom(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                await wait_ready(sock.fileno())
                continue
            if plan.admit(SocketAddress.from_sockaddr(sock.family, sender)):
                break
            sock.recv(1)  # a refused sender's datagram: dropped
        sock.connect(sender)
    except BaseException:
        sock.close()
        raise
    leg = SocketLeg(sock, "udp")
    _say(plan, 1, f"Connection from {_peer(leg)}.")
    local = await _local_leg(plan, leg)
    return await _pump(plan, local, leg, connect_mode=False)


# --- scan ----------------------------------------------------------------------------------


async def _scan(plan: _Plan) -> int:
    from sockit.relay.scan import parse_port_spec, scan_ports  # noqa: PLC0415

    assert plan.host is not None  # noqa: S101
    ports = parse_port_spec(plan.args.port)
    timeout = plan.connect_timeout or 2.0

    def report(result: object) -> None:
        from sockit.relay.scan import PortResult  # noqa: PLC0415

        assert isinstance(result, PortResult)  # noqa: S101
        if result.open:
            _say(plan, 1, f"Connected to {result.address}.")
        else:
            _say(plan, 2, f"{plan.host}:{result.port}: {result.error}.")

    results = await scan_ports(
        plan.host, ports, timeout=timeout, family=plan.family, on_result=report
    )
    opened = [result for result in results if result.open]
    _say(plan, 1, f"{len(opened)} of {len(results)} ports open.")
    return EXIT_OK if opened else EXIT_NETWORK_ERROR
