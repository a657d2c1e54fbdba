"""The ``sockit`` command: argument parsing and wiring only, no socket logic of its own.

Exit codes (ncat's): 0 success, 1 network error (refused, reset, timeout, name error),
2 usage error. Human output goes to stderr, data to stdout.

Start-up time is a measured goal (``sockit --version`` <= 2.5x ``python -c pass``), so
this module imports nothing from sockit at import time: each subcommand imports what it
needs when it runs.
"""

from __future__ import annotations

import sys

# typing.TYPE_CHECKING without importing typing (start-up time, see above).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

__all__ = ["EXIT_NETWORK_ERROR", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_NETWORK_ERROR = 1
EXIT_USAGE = 2


def _version() -> str:
    from sockit._version import __version__  # noqa: PLC0415 (keep --version fast)

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sockit`` command."""
    import argparse  # noqa: PLC0415 (not needed for the --version fast path)

    parser = argparse.ArgumentParser(
        prog="sockit",
        description="The socket model, made correct and pleasant.",
    )
    parser.add_argument(
        "--version", action="version", version=f"sockit {_version()}", help="print the version"
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = subcommands.add_parser(
        "demo",
        help="show the socket model step by step on loopback",
        description=(
            "Start a server and a client on loopback and show each socket operation: "
            "getaddrinfo, socket, bind, listen, connect, accept (with the 4-tuple), "
            "send and recv both ways, a half-close and the EOF it produces, and close."
        ),
    )
    demo.add_argument(
        "--host",
        default="localhost",
        help="the name the client looks up and connects to (default: localhost)",
    )
    demo.add_argument(
        "--message",
        default="hello, server",
        help="what the client sends (default: %(default)r)",
    )
    # Listed here for `sockit --help`; its own parser (sockit.cli.serve) reads the words
    # after "serve", since a program's arguments after "--" need a hand-made split.
    subcommands.add_parser(
        "serve",
        add_help=False,
        help="serve echo, discard, chargen, daytime or a program per connection",
        description="Run 'sockit serve --help' for the options.",
    )
    subcommands.add_parser(
        "relay",
        add_help=False,
        help="relay bytes between any two endpoints (tcp, udp, unix, stdio, exec, file)",
        description="Run 'sockit relay --help' for the endpoint grammar and options.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sockit`` command; return its exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments == ["--version"]:
        # Fast path: scripts call `sockit --version` to probe for the tool; answer
        # without building the parser (argparse and its imports are most of start-up).
        sys.stdout.write(f"sockit {_version()}\n")
        return EXIT_OK
    if arguments[:1] == ["relay"]:
        from sockit.cli.relay import run_relay  # noqa: PLC0415 (lazy: start-up time)

        return run_relay(arguments[1:])
    if arguments[:1] == ["serve"]:
        from sockit.cli.serve import run_serve  # noqa: PLC0415 (lazy: start-up time)

        return run_serve(arguments[1:])
    if arguments[:1] not in (["demo"], ["-h"], ["--help"], []):
        from sockit.cli.ncat import run_ncat  # noqa: PLC0415 (lazy: start-up time)

        return run_ncat(arguments)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write("sockit: error: a command is required (try 'sockit demo')\n")
        return EXIT_USAGE
    if args.command == "demo":
        from sockit.cli.demo import run_demo  # noqa: PLC0415 (lazy: start-up time)

        return run_demo(host=args.host, message=args.message)
    raise AssertionError(f"unhandled command {args.command!r}")  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
