"""``sockit relay SRC DST``: relay bytes between any two endpoints, both ways.

Parsing and wiring only: the grammar, the legs and the pump live in
:mod:`sockit.relay`. Exit codes: 0 when a one-shot relay ended cleanly (EOF both ways,
or a timeout the user asked for) or a listening relay was stopped by SIGINT/SIGTERM;
1 for network errors (refused, unresolvable, reset, an address in use), with one line
naming the address; 2 for usage errors (a malformed endpoint); 130 if Ctrl-C
interrupted a one-shot transfer.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from sockit.cli._common import Parser, UsageError, add_log_handler
from sockit.cli.main import EXIT_NETWORK_ERROR, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from sockit.relay.pump import PumpResult
    from sockit.relay.runner import Relay

__all__ = ["EXIT_INTERRUPTED", "build_relay_parser", "run_relay"]

EXIT_INTERRUPTED = 130
_PROG = "sockit relay"

GRAMMAR = """\
endpoints:
  tcp:HOST:PORT            connect (Happy Eyeballs; [v6]:PORT for IPv6 literals)
  tcp-listen:[HOST:]PORT   listen (no HOST: IPv4 and IPv6), relay every connection
  udp:HOST:PORT            connected UDP socket
  udp-listen:[HOST:]PORT   UDP, one session per client (to udp: or unix-dgram:)
  unix:PATH                connect to a UNIX stream socket (@name: abstract)
  unix-listen:PATH         listen on a UNIX stream socket
  unix-dgram:PATH          UNIX datagram socket
  stdio or -               stdin and stdout
  exec:PROGRAM ARGS        run PROGRAM per connection (no shell)
  sh:COMMAND               run COMMAND with /bin/sh -c per connection
  file:PATH                read PATH (first endpoint) or write it (second)
options, after a comma (tcp-listen:8080,max-conns=100,idle-timeout=30s):
  bind=ADDR[:PORT]  proxy-protocol=v1|v2  idle-timeout=S  close-wait=S
  connect-timeout=S  max-conns=N  backlog=N  mode=0600  append
durations: 2, 0.5, 500ms, 2s, 1m, 1h

EOF in one direction is passed on as a half-close (shutdown SHUT_WR) while the other
direction keeps flowing; a reset on one side resets the other.
exit codes: 0 done (or stopped by a signal), 1 network error or reset, 2 usage error."""


def build_relay_parser() -> argparse.ArgumentParser:
    """The parser of ``sockit relay``."""
    import argparse  # noqa: PLC0415 (lazy: start-up time)

    parser = Parser(
        prog=_PROG,
        usage="%(prog)s [options] SRC DST",
        description="Relay bytes between two endpoints, full duplex.",
        epilog=GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="first endpoint")
    parser.add_argument("dst", metavar="DST", help="second endpoint")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show listening addresses and a summary line per connection (-vv: more)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="show each socket operation as it happens"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr messages as text or one JSON object per event (default text)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="relay a listening endpoint's connections in N processes (default 1)",
    )
    parser.add_argument(
        "--no-splice",
        action="store_true",
        help="copy through a buffer instead of splice(2) (for comparison)",
    )
    return parser


def run_relay(argv: Sequence[str]) -> int:
    """Run ``sockit relay`` with ``argv`` (the words after ``relay``); the exit code."""
    from sockit.errors import AddressError  # noqa: PLC0415 (lazy: start-up time)

    try:
        args = build_relay_parser().parse_args(list(argv))
    except UsageError as error:
        return _usage_error(str(error))
    level = logging.WARNING
    if args.verbose:
        level = logging.INFO if args.verbose == 1 else logging.DEBUG
    loggers = [(logging.getLogger("sockit.relay"), _PROG, level)]
    if args.trace:
        loggers.append((logging.getLogger("sockit.trace"), f"{_PROG}: trace", logging.DEBUG))
    handlers = [
        (
            logger,
            add_log_handler(
                logger, prog=prog, level=lvl, log_format=args.log_format, stream=sys.stderr
            ),
        )
        for logger, prog, lvl in loggers
    ]
    try:
        from sockit.relay.runner import Relay, raise_fd_limit  # noqa: PLC0415

        raise_fd_limit()

        try:
            relay = Relay(args.src, args.dst, splice=not args.no_splice)
        except AddressError as error:
            return _usage_error(str(error))
        if args.workers != 1:
            return _run_workers(relay, handlers[0][1], args)
        return _run(relay, handlers[0][1], verbose=args.verbose)
    finally:
        for logger, handler in handlers:
            logger.removeHandler(handler)


def _run_workers(relay: Relay, out: logging.Handler, args: argparse.Namespace) -> int:
    from sockit.relay.runner import serve_workers  # noqa: PLC0415

    if args.workers < 1:
        return _usage_error(f"--workers must be at least 1, not {args.workers}")
    if relay.src.kind not in {"tcp-listen", "unix-listen"} or relay.dst.listening:
        return _usage_error("--workers needs a tcp-listen or unix-listen SRC and a connecting DST")

    def ready(addresses: Sequence[object]) -> None:
        _announce(relay, out, addresses, verbose=args.verbose)

    try:
        serve_workers(relay.src, relay.dst, args.workers, ready=ready, splice=not args.no_splice)
    except ValueError as error:
        return _usage_error(str(error))
    except OSError as error:
        _emit(out, logging.ERROR, _describe_error(error), "error")
        return EXIT_NETWORK_ERROR
    return EXIT_OK


def _usage_error(message: str) -> int:
    sys.stderr.write(f"{_PROG}: error: {message} (see '{_PROG} --help')\n")
    return EXIT_USAGE


def _run(relay: Relay, out: logging.Handler, *, verbose: int) -> int:
    """Run the relay; status lines go straight to ``out`` (the relay logger's handler,
    text or JSON), whatever the logger's level."""
    import asyncio  # noqa: PLC0415 (lazy: start-up time)
    import signal  # noqa: PLC0415

    from sockit.aio._loop import run as run_loop  # noqa: PLC0415

    outcome: dict[str, object] = {}

    async def main() -> PumpResult | None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # noqa: S101

        def stop(signum: int) -> None:
            outcome["signal"] = signum
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop, signum)
        addresses = await relay.start()
        _announce(relay, out, addresses, verbose=verbose)
        return await relay.run()

    try:
        try:
            result = run_loop(main())
        finally:
            if verbose and relay.src.listening:
                _summary(relay, out)
    except asyncio.CancelledError:
        # A listening relay runs until a signal stops it: that is its normal end. A
        # one-shot transfer cut short is not.
        serving_many = relay.src.listening and relay.stats.connections != 1
        if outcome.get("signal") == signal.SIGTERM or serving_many:
            return EXIT_OK
        return EXIT_INTERRUPTED
    except OSError as error:
        _emit(out, logging.ERROR, _describe_error(error), "error")
        return EXIT_NETWORK_ERROR
    if result is None or result.outcome != "reset":
        return EXIT_OK
    reason = "reset" if result.error is None else (result.error.strerror or str(result.error))
    _emit(out, logging.ERROR, f"{result.failed_leg}: {reason.lower()}", "reset")
    return EXIT_NETWORK_ERROR


def _emit(out: logging.Handler, level: int, message: str, event: str, **fields: object) -> None:
    """One status line through ``out`` (so ``--log-format json`` applies to it too)."""
    logger = logging.getLogger("sockit.relay")
    record = logger.makeRecord(
        logger.name, level, __file__, 0, "%s", (message,), None, extra={"event": event, **fields}
    )
    out.handle(record)


def _summary(relay: Relay, out: logging.Handler) -> None:
    udp = relay.udp_stats
    if udp is not None:
        message = (
            f"{udp.sessions_opened} UDP sessions ({udp.sessions_expired} expired, "
            f"{udp.sessions_evicted} evicted), {udp.datagrams_in} datagrams "
            f"({udp.bytes_in} bytes) in, {udp.datagrams_out} datagrams ({udp.bytes_out} "
            f"bytes) out, {udp.errors} dropped"
        )
        _emit(out, logging.INFO, message, "summary", **vars(udp))
        return
    stats = relay.stats
    message = (
        f"{stats.connections} connections ({stats.clean} clean, {stats.failed} "
        f"failed, {stats.refused} refused), {stats.bytes_forward} bytes sent, "
        f"{stats.bytes_backward} bytes received"
    )
    _emit(out, logging.INFO, message, "summary", **vars(stats))


def _announce(
    relay: Relay, out: logging.Handler, addresses: Sequence[object], *, verbose: int
) -> None:
    """``Listening on ADDR`` per bound address: with -v, or always when the kernel chose
    the port (the user has no other way to learn it)."""
    chose = any(spec.listening and spec.port == 0 for spec in (relay.src, relay.dst))
    if not verbose and not chose:
        return
    for address in addresses:
        _emit(out, logging.INFO, f"Listening on {address}", "listening", address=str(address))


def _describe_error(error: OSError) -> str:
    text = str(error)
    if error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    return text
