"""``sockit serve``: run a built-in service or a program per connection.

    sockit serve echo|discard|chargen|daytime [ADDR] [--udp] [options]
    sockit serve exec [ADDR] [options] -- PROGRAM [ARG...]
    sockit serve exec [ADDR] [options] --sh-exec 'COMMAND'
    sockit serve --echo tcp:HOST:PORT        (the benchmark kit's form; also udp:, unix:)

``ADDR`` (or ``--listen ADDR``) is ``[HOST:]PORT``, ``[v6]:PORT``, ``unix:PATH``,
``/abs/path`` or ``@abstract``; without it the server listens on every address on a
port the kernel picks, and says which. Human output goes to stderr (``-v``: every bound
address and every connection; ``--log-format json``: one JSON object per event). Exit
codes: 0 after a graceful stop (SIGINT/SIGTERM), 1 for network errors (a port in use),
2 for usage errors; 130 if a second signal aborted the drain.

Parsing and wiring only: sockets, servers and services live in :mod:`sockit.serve`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sockit.addr import InetEndpoint, UnixEndpoint, parse_endpoint, parse_port
from sockit.cli._common import Parser, UsageError, add_log_handler
from sockit.cli.main import EXIT_NETWORK_ERROR, EXIT_OK, EXIT_USAGE
from sockit.errors import AddressError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["EXIT_INTERRUPTED", "build_serve_parser", "run_serve"]

EXIT_INTERRUPTED = 130
"""128 + SIGINT, the shell's convention for "killed by Ctrl-C": a second signal
aborted the graceful drain."""

_PROG = "sockit serve"
_SERVICES = ("echo", "discard", "chargen", "daytime")
_COMMANDS = (*_SERVICES, "exec")
_MODES = ("sequential", "thread", "fork", "async")
# Endpoint prefixes accepted by --listen and the --SERVICE forms: the relay grammar's
# names (DESIGN.md, CLI), which the benchmark kit uses too.
_SCHEMES = {
    "tcp": "tcp",
    "tcp-listen": "tcp",
    "udp": "udp",
    "udp-listen": "udp",
    "unix": "unix",
    "unix-listen": "unix",
}
_LOGGER_NAME = "sockit.serve"


class _Serving(Protocol):
    """What the CLI needs of a Server or UDPServer."""

    @property
    def addresses(self) -> Sequence[object]: ...

    def serve_forever(self) -> None: ...

    def shutdown(self, drain_timeout: float | None = None) -> None: ...


def build_serve_parser() -> argparse.ArgumentParser:
    """The parser of ``sockit serve`` (everything before a ``--``)."""
    parser = Parser(
        prog=_PROG,
        usage=(
            "%(prog)s {echo,discard,chargen,daytime,exec} [ADDR] [options] [-- PROGRAM [ARG...]]"
        ),
        description=(
            "Serve echo (RFC 862), discard (RFC 863), chargen (RFC 864) or daytime "
            "(RFC 867) over TCP, UDP or a UNIX socket, or run a program per connection "
            "with the connection as its stdin and stdout (exec)."
        ),
        epilog=(
            "ADDR: [HOST:]PORT, [v6]:PORT, unix:PATH, /PATH or @abstract; tcp:, udp: "
            "and unix: prefixes are accepted. Without ADDR the kernel picks the port. "
            "Exit codes: 0 stopped by a signal, 1 network error, 2 usage error."
        ),
    )
    parser.add_argument("command", nargs="?", choices=_COMMANDS, metavar="SERVICE")
    parser.add_argument("address", nargs="?", metavar="ADDR", help="where to listen")
    parser.add_argument("-l", "--listen", metavar="ADDR", help="where to listen (same as ADDR)")
    for name in _SERVICES:
        parser.add_argument(
            f"--{name}",
            metavar="ENDPOINT",
            dest=f"service_{name}",
            help=f"serve {name} at ENDPOINT (tcp:HOST:PORT, udp:HOST:PORT, unix:PATH)",
        )
    parser.add_argument("-u", "--udp", action="store_true", help="serve over UDP")
    parser.add_argument(
        "--sh-exec",
        metavar="COMMAND",
        help="exec: run COMMAND with /bin/sh -c instead of PROGRAM (no shell otherwise)",
    )
    parser.add_argument(
        "--mode",
        choices=_MODES,
        help="concurrency per connection (default: async for services, thread for exec)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="N worker processes (default 1)"
    )
    parser.add_argument(
        "--max-conns",
        type=int,
        default=1000,
        metavar="N",
        help="connections served at once; more are closed at once (default 1000)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="close a connection idle for S seconds (default: never)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGINT/SIGTERM, let connections finish for S seconds (default 10)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        metavar="ADDR/CIDR",
        help="only accept peers on this list (repeatable)",
    )
    parser.add_argument(
        "--deny", action="append", metavar="ADDR/CIDR", help="refuse these peers (repeatable)"
    )
    parser.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="read a PROXY protocol v1/v2 header before serving each connection",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show every bound address and every connection",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr messages as text or one JSON object per event (default text)",
    )
    return parser


@dataclass
class _Plan:
    """What the command line asks for, checked."""

    command: str
    endpoint: InetEndpoint | UnixEndpoint
    udp: bool
    program: list[str] = field(default_factory=list)
    shell_command: str | None = None
    mode: str = "thread"
    workers: int = 1
    max_connections: int = 1000
    idle_timeout: float | None = None
    drain_timeout: float = 10.0
    allow: list[str] | None = None
    deny: list[str] | None = None
    proxy_protocol: bool = False
    verbose: int = 0
    log_format: str = "text"


def run_serve(argv: Sequence[str]) -> int:
    """Run ``sockit serve`` with ``argv`` (the words after ``serve``); return the exit code."""
    words = list(argv)
    if "--" in words:
        split = words.index("--")
        options, program = words[:split], words[split + 1 :]
    else:
        options, program = words, []
    parser = build_serve_parser()
    try:
        plan = _plan(parser.parse_intermixed_args(options), program)
    except UsageError as error:
        return _usage_error(str(error))
    except AddressError as error:
        return _usage_error(str(error))
    handler = _configure_logging(plan)
    try:
        return _serve(plan, handler)
    finally:
        logging.getLogger(_LOGGER_NAME).removeHandler(handler)


def _usage_error(message: str) -> int:
    sys.stderr.write(f"{_PROG}: error: {message} (see '{_PROG} --help')\n")
    return EXIT_USAGE


def _plan(args: argparse.Namespace, program: list[str]) -> _Plan:
    command: str | None = args.command
    address: str | None = args.address
    bench = [(name, getattr(args, f"service_{name}")) for name in _SERVICES]
    bench = [(name, value) for name, value in bench if value is not None]
    if len(bench) > 1:
        raise UsageError("give one service")
    if bench:
        if command is not None:
            raise UsageError(f"give the service once: {command!r} or --{bench[0][0]}")
        command, address = bench[0]
        if args.listen is not None:
            raise UsageError(f"--{command} already says where to listen; drop --listen")
    if command is None:
        raise UsageError("a service is required: echo, discard, chargen, daytime or exec")
    if args.listen is not None:
        if address is not None:
            raise UsageError("give the address once: as ADDR or with --listen")
        address = args.listen
    endpoint, scheme = _parse_listen_address(address)
    udp = bool(args.udp) or scheme == "udp"
    if scheme == "tcp" and args.udp:
        raise UsageError("--udp contradicts a tcp: address")
    plan = _Plan(command=command, endpoint=endpoint, udp=udp)
    _plan_program(plan, args, program)
    _plan_options(plan, args)
    return plan


def _plan_program(plan: _Plan, args: argparse.Namespace, program: list[str]) -> None:
    if plan.command != "exec":
        if program or args.sh_exec is not None:
            raise UsageError(f"a program only goes with 'exec', not with {plan.command!r}")
        return
    if args.sh_exec is not None and program:
        raise UsageError("give either --sh-exec COMMAND or -- PROGRAM, not both")
    if args.sh_exec is None and not program:
        raise UsageError("exec needs a program: 'exec -- PROGRAM [ARG...]' or --sh-exec")
    if plan.udp:
        raise UsageError("exec serves stream connections (TCP or UNIX), not UDP")
    if program:
        # Checked now, so a typo is one error at start-up, not one per connection.
        if shutil.which(program[0]) is None:
            raise UsageError(f"program not found or not executable: {program[0]!r}")
        plan.program = program
    else:
        plan.shell_command = args.sh_exec


def _plan_options(plan: _Plan, args: argparse.Namespace) -> None:
    plan.mode = args.mode or _default_mode(plan.command)
    if plan.udp and isinstance(plan.endpoint, UnixEndpoint):
        raise UsageError("UDP needs a host and port, not a UNIX socket path")
    if plan.udp and args.mode not in (None, "sequential"):
        raise UsageError("a UDP server runs in one thread; --mode does not apply")
    if plan.udp and args.workers != 1:
        raise UsageError("--workers is for TCP and UNIX servers")
    if plan.udp and args.proxy_protocol:
        raise UsageError("--proxy-protocol is for stream connections, not UDP")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")
    if args.max_conns < 1:
        raise UsageError(f"--max-conns must be at least 1, not {args.max_conns}")
    for name, value in (
        ("--idle-timeout", args.idle_timeout),
        ("--drain-timeout", args.drain_timeout),
    ):
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise UsageError(f"{name} must be a number of seconds >= 0, not {value}")
    plan.workers = args.workers
    plan.max_connections = args.max_conns
    plan.idle_timeout = args.idle_timeout
    plan.drain_timeout = args.drain_timeout
    plan.allow = args.allow
    plan.deny = args.deny
    plan.proxy_protocol = args.proxy_protocol
    plan.verbose = args.verbose
    plan.log_format = args.log_format


def _default_mode(command: str) -> str:
    """The mode when --mode is not given: ``async`` for the services when this build
    has it (an event loop: the fastest, the lightest per idle connection); ``thread``
    for exec, whose child then reads the socket itself (in async mode the event loop
    owns the socket and the child's stdin is a pipe fed from it)."""
    if command == "exec":
        return "thread"
    import importlib.util  # noqa: PLC0415 (only for this question)

    return "async" if importlib.util.find_spec("sockit.serve._async") is not None else "thread"


def _parse_listen_address(text: str | None) -> tuple[InetEndpoint | UnixEndpoint, str | None]:
    """``(endpoint, scheme)``; scheme is ``tcp``/``udp``/``unix`` when a prefix said so."""
    if text is None:
        return InetEndpoint(None, 0), None
    scheme, colon, rest = text.partition(":")
    kind = _SCHEMES.get(scheme.lower()) if colon else None
    if kind is None:
        return parse_endpoint(text), None
    if kind == "unix":
        return UnixEndpoint(rest), kind
    if rest.count(":") > 1 and not rest.startswith("["):
        # tcp:::1:7000: the relay grammar puts the port last, so an unbracketed IPv6
        # address is unambiguous after a scheme (the benchmark kit writes tcp:{host}:...).
        host, _, port = rest.rpartition(":")
        return InetEndpoint(host, parse_port(port)), kind
    endpoint = parse_endpoint(rest)
    if isinstance(endpoint, UnixEndpoint):
        raise AddressError(f"{scheme}: needs [HOST:]PORT, not a UNIX socket path: {text!r}")
    return endpoint, kind


# --- logging -------------------------------------------------------------------------------


def _configure_logging(plan: _Plan) -> logging.Handler:
    # -v shows every connection, which the server logs at debug level.
    return add_log_handler(
        logging.getLogger(_LOGGER_NAME),
        prog=_PROG,
        level=logging.DEBUG if plan.verbose else logging.WARNING,
        log_format=plan.log_format,
        stream=sys.stderr,
    )


def _announce(plan: _Plan, handler: logging.Handler, addresses: Sequence[object]) -> None:
    """``Listening on ADDR`` per bound address: with -v, or always when the kernel chose
    the port (the user has no other way to learn it)."""
    chose_port = isinstance(plan.endpoint, InetEndpoint) and plan.endpoint.port == 0
    if not plan.verbose and not chose_port:
        return
    logger = logging.getLogger(_LOGGER_NAME)
    protocol = "UDP" if plan.udp else "UNIX" if isinstance(plan.endpoint, UnixEndpoint) else "TCP"
    service = plan.command if plan.command != "exec" else f"exec {_describe_program(plan)}"
    for address in addresses:
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            "Listening on %s (%s %s)",
            (address, protocol, service),
            None,
            extra={"event": "listening", "address": str(address), "protocol": protocol},
        )
        # Straight to the handler: shown whatever the verbosity when the port was
        # chosen by the kernel.
        handler.handle(record)


def _describe_program(plan: _Plan) -> str:
    if plan.shell_command is not None:
        return f"sh -c {plan.shell_command!r}"
    return " ".join(plan.program)


# --- serving --------------------------------------------------------------------------------


def _serve(plan: _Plan, log_handler: logging.Handler) -> int:
    logger = logging.getLogger(_LOGGER_NAME)
    try:
        server = _build_server(plan, logger)
    except ValueError as error:  # AddressError included: a bad address or list entry
        return _usage_error(str(error))
    except OSError as error:
        sys.stderr.write(f"{_PROG}: {error}\n")
        return EXIT_NETWORK_ERROR
    _announce(plan, log_handler, server.addresses)
    # serve_forever routes SIGTERM/SIGINT to a graceful drain while it runs and puts the
    # previous handlers back when it returns. Those are ours, not the defaults: a late
    # signal after the drain (a supervisor repeating "stop" as we exit) must end the
    # process with the exit status it was about to return, not kill it by signal.
    _exit_quietly_on_signals()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown(drain_timeout=0)
        return EXIT_INTERRUPTED
    except OSError as error:
        server.shutdown(drain_timeout=0)
        sys.stderr.write(f"{_PROG}: {error}\n")
        return EXIT_NETWORK_ERROR
    return EXIT_OK


def _exit_quietly_on_signals() -> None:
    import signal  # noqa: PLC0415 (lazy: start-up time)

    def exit_ok(signum: int, frame: object) -> None:
        del signum, frame
        raise SystemExit(EXIT_OK)

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: nothing to protect
            signal.signal(signum, exit_ok)


def _build_server(plan: _Plan, logger: logging.Logger) -> _Serving:
    """The Server or UDPServer the plan describes, bound and listening."""
    endpoint = plan.endpoint
    if plan.udp:
        from sockit.serve.services import SERVICES  # noqa: PLC0415 (lazy: start-up time)
        from sockit.serve.udp import serve_udp  # noqa: PLC0415

        assert isinstance(endpoint, InetEndpoint)  # noqa: S101 (checked in _plan_options)
        return serve_udp(
            SERVICES[plan.command].datagram,
            endpoint.port,
            endpoint.host,
            allow=plan.allow,
            deny=plan.deny,
            logger=logger,
        )
    from sockit.serve.server import serve  # noqa: PLC0415 (lazy: start-up time)

    handler = _stream_handler(plan)
    options: dict[str, Any] = {
        "mode": plan.mode,
        "workers": plan.workers,
        "max_connections": plan.max_connections,
        "idle_timeout": plan.idle_timeout,
        "drain_timeout": plan.drain_timeout,
        "allow": plan.allow,
        "deny": plan.deny,
        "proxy_protocol": plan.proxy_protocol,
        "logger": logger,
    }
    if isinstance(endpoint, UnixEndpoint):
        from sockit.sync import listen_unix  # noqa: PLC0415

        listener = listen_unix(endpoint.path)
        try:
            return serve(handler, listener=listener, **options)
        except BaseException:
            listener.close()
            raise
    return serve(handler, endpoint.port, endpoint.host, **options)


def _stream_handler(plan: _Plan) -> Any:
    if plan.command == "exec":
        from sockit.serve.exec import (  # noqa: PLC0415 (lazy: start-up time)
            async_exec_handler,
            async_sh_exec_handler,
            exec_handler,
            sh_exec_handler,
        )

        if plan.mode == "async":
            if plan.shell_command is not None:
                return async_sh_exec_handler(plan.shell_command)
            return async_exec_handler(plan.program)
        if plan.shell_command is not None:
            return sh_exec_handler(plan.shell_command)
        return exec_handler(plan.program)
    from sockit.serve.services import SERVICES  # noqa: PLC0415

    service = SERVICES[plan.command]
    return service.async_stream if plan.mode == "async" else service.stream
