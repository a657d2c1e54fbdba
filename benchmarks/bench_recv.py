"""Receive-path benchmark: sockit's sync Stream against the stdlib, same run, same data.

* ``recv_line``: 100-byte lines; sockit ``Stream.recv_line()`` against the stdlib's
  ``socket.makefile("rb").readline()`` (a C BufferedReader), the DESIGN.md goal is
  >= 1.0x.
* bulk ``recv``: sockit ``Stream.recv(262144)`` against ``socket.recv_into`` into a
  preallocated buffer (the fastest stdlib loop) and plain ``socket.recv``.

A forked child writes the same bytes to a loopback TCP connection for every contender;
rounds are interleaved and the median of each is reported, so machine noise hits all
contenders alike. The reader is pinned to CPU 0 and the sender to CPU 1.
Output: a Markdown table on stdout, ratios against the stdlib.

    python benchmarks/bench_recv.py [--rounds 5] [--lines 300000] [--bulk-mb 256]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable

import sockit
import sockit.sync  # load the lazy names now, outside every timed region

LINE = b"x" * 99 + b"\n"


def _connected_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
    return client, conn


_PIN = True


def _pin(cpu: int) -> None:
    """Pin to one CPU (as ../shared/bench does) so sender and reader never share one."""
    if _PIN and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def _run_with_sender(payload: bytes, repeat: int, reader: Callable[[socket.socket], int]) -> float:
    """Fork a sender that writes ``payload`` ``repeat`` times; time ``reader``."""
    sender, receiver = _connected_pair()
    pid = os.fork()
    if pid == 0:  # child: send and exit without running any Python cleanup
        try:
            _pin(1)
            receiver.close()
            for _ in range(repeat):
                sender.sendall(payload)
            sender.shutdown(socket.SHUT_WR)
        finally:
            os._exit(0)
    sender.close()
    try:
        started = time.perf_counter()
        got = reader(receiver)
        elapsed = time.perf_counter() - started
    finally:
        receiver.close()
        os.waitpid(pid, 0)
    if got != len(payload) * repeat:
        raise SystemExit(f"reader got {got} bytes, expected {len(payload) * repeat}")
    return elapsed


def read_lines_stdlib(sock: socket.socket) -> int:
    total = 0
    with sock.makefile("rb") as file:
        readline = file.readline
        while line := readline():
            total += len(line)
    return total


def read_lines_sockit(sock: socket.socket) -> int:
    stream = sockit.SocketStream(socket.socket(fileno=os.dup(sock.fileno())))
    total = 0
    with stream:
        recv_line = stream.recv_line
        try:
            while True:
                total += len(recv_line()) + 1
        except sockit.EndOfStream:
            pass
    return total


def read_bulk_recv_into(sock: socket.socket) -> int:
    buffer = bytearray(262144)
    recv_into = sock.recv_into
    total = 0
    while n := recv_into(buffer):
        total += n
    return total


def read_bulk_stdlib_recv(sock: socket.socket) -> int:
    recv = sock.recv
    total = 0
    while data := recv(262144):
        total += len(data)
    return total


def read_bulk_sockit(sock: socket.socket) -> int:
    stream = sockit.SocketStream(socket.socket(fileno=os.dup(sock.fileno())))
    total = 0
    with stream:
        recv = stream.recv
        while data := recv(262144):
            total += len(data)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description="sockit receive path against the stdlib")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--bulk-mb", type=int, default=256)
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place reader and sender"
    )
    args = parser.parse_args()
    global _PIN  # noqa: PLW0603 (a command-line switch for the whole run)
    _PIN = not args.no_pin
    _pin(0)

    line_block = LINE * 1000  # 100 kB per sendall
    line_repeat = max(1, args.lines // 1000)
    bulk_block = os.urandom(1 << 20)
    groups: dict[str, dict[str, Callable[[socket.socket], int]]] = {
        "recv_line (100 B lines)": {
            "stdlib makefile().readline": read_lines_stdlib,
            "sockit Stream.recv_line": read_lines_sockit,
        },
        "bulk recv (256 KiB reads)": {
            "stdlib recv_into": read_bulk_recv_into,
            "stdlib recv": read_bulk_stdlib_recv,
            "sockit Stream.recv": read_bulk_sockit,
        },
    }
    samples: dict[str, list[float]] = {name: [] for group in groups.values() for name in group}
    for round_index in range(args.rounds):
        for group_name, contenders in groups.items():
            names = list(contenders)
            # Rotate the order per round so no contender always runs first.
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                if group_name.startswith("recv_line"):
                    seconds = _run_with_sender(line_block, line_repeat, contenders[name])
                    samples[name].append(line_repeat * 1000 / seconds)
                else:
                    seconds = _run_with_sender(bulk_block, args.bulk_mb, contenders[name])
                    samples[name].append(args.bulk_mb / 1024 / seconds)
    placement = "unpinned" if args.no_pin else "reader on CPU 0, sender on CPU 1"
    print(f"python {sys.version.split()[0]}, {args.rounds} rounds, median of each, {placement}\n")
    print("| group | contender | rate | ratio to first |")
    print("|---|---|---|---|")
    for group_name, contenders in groups.items():
        names = list(contenders)
        reference = statistics.median(samples[names[0]])
        for name in names:
            rate = statistics.median(samples[name])
            unit = "lines/s" if group_name.startswith("recv_line") else "GiB/s"
            shown = f"{rate:,.0f} {unit}" if unit == "lines/s" else f"{rate:.2f} {unit}"
            print(f"| {group_name} | {name} | {shown} | {rate / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
