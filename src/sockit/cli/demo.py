"""``sockit demo``: the socket model of the lecture notes, shown step by step on loopback.

A server thread and a client (this thread) go through every operation the notes teach:
getaddrinfo, socket, bind, listen (passive open), connect (active open), accept (a new
socket per connection, with its socket pair, the 4-tuple), send and recv both ways,
shutdown(SHUT_WR) (a half-close: a FIN) and the EOF it produces, then close. Each step
prints one plain line a learner can follow, with the real addresses and ports.

Wiring and printing only: every socket operation is a sockit library call.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import TextIO

from sockit import SocketListener, SocketStream, connect, listen
from sockit.addr import AddrInfo, check_host, default_resolver
from sockit.cli.main import EXIT_NETWORK_ERROR, EXIT_OK

__all__ = ["run_demo"]

_FAMILY_NAMES = {socket.AF_INET: "AF_INET (IPv4)", socket.AF_INET6: "AF_INET6 (IPv6)"}


class _Narrator:
    """Prints numbered steps from two threads without interleaving lines."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._step = 0
        self._start = time.monotonic()

    def say(self, who: str, text: str) -> None:
        with self._lock:
            self._step += 1
            elapsed = (time.monotonic() - self._start) * 1000
            self._out.write(f"{self._step:2d}. [{elapsed:7.2f} ms] {who:<6} {text}\n")
            self._out.flush()

    def note(self, text: str) -> None:
        with self._lock:
            self._out.write(f"{'':22}{text}\n")
            self._out.flush()


def run_demo(
    *, host: str = "localhost", message: str = "hello, server", out: TextIO | None = None
) -> int:
    """Run the demo, printing to ``out`` (stdout by default); return the exit code."""
    out = out or sys.stdout
    narrator = _Narrator(out)
    out.write("sockit demo: one TCP connection on loopback, one socket operation per line.\n")
    out.write("The server is a thread of this process; the client is the main thread.\n\n")
    try:
        return _run(narrator, host, message.encode())
    except OSError as error:
        sys.stderr.write(f"sockit demo: {error}\n")
        return EXIT_NETWORK_ERROR


def _run(narrator: _Narrator, host: str, message: bytes) -> int:
    say = narrator.say
    say("server", "getaddrinfo(None, 0, AI_PASSIVE): no host means every address, both families")
    listener = listen(0)
    with listener:
        families = " and ".join(
            _FAMILY_NAMES.get(a.family, str(a.family)) for a in listener.addresses
        )
        say("server", f"socket(): one SOCK_STREAM socket per family: {families}")
        first, *others = listener.addresses
        say("server", f"bind({first.host or '*'}, port 0): port 0 asks the kernel to choose")
        narrator.note(f"the kernel chose port {listener.port}; bound address {first}")
        for other in others:
            say("server", f"bind({other}): the same port for the other family")
        say("server", "listen(): the sockets are now passive, waiting for connections")
        narrator.note("every bound address: " + ", ".join(map(str, listener.addresses)))

        stop = threading.Event()
        server_error: list[BaseException] = []
        server = threading.Thread(
            target=_serve_one,
            args=(listener, narrator, stop, server_error),
            name="sockit-demo-server",
        )
        infos = _resolve(narrator, host, listener.port)
        server.start()
        try:
            _client(narrator, host, infos, listener.port, message)
        finally:
            stop.set()
            server.join(10)
        if server_error:
            raise server_error[0]
    say("server", "close() the listening sockets: no new connections are accepted")
    narrator.note("done: every socket is closed.")
    return EXIT_OK


def _resolve(narrator: _Narrator, host: str, port: int) -> list[AddrInfo]:
    infos = default_resolver().getaddrinfo(
        check_host(host), port, type=socket.SOCK_STREAM, timeout=10
    )
    narrator.say("client", f"getaddrinfo({host!r}, {port}) returned {len(infos)} address(es):")
    for info in infos:
        narrator.note(f"{info.address}  {_FAMILY_NAMES.get(info.family, str(info.family))}")
    return infos


def _client(
    narrator: _Narrator, host: str, infos: list[AddrInfo], port: int, message: bytes
) -> None:
    say = narrator.say
    say("client", "socket() + connect(): active open, the three-way handshake (SYN, SYN-ACK, ACK)")
    # Connect to exactly the addresses shown above (a resolver that answers from them),
    # so the demo shows one lookup, not two.
    stream = connect(host, port, timeout=10, resolver=_Answers(infos))
    with stream:
        narrator.note(
            f"connected from {stream.local_address} to {stream.remote_address} "
            "(Happy Eyeballs tried the addresses in order)"
        )
        line = message + b"\n"
        say("client", f"send({line!r}): {len(line)} bytes")
        stream.sendall(line)
        reply = stream.recv_line(timeout=10)
        say("client", f"recv() -> {reply!r}")
        say("client", "shutdown(SHUT_WR): half-close, a FIN: 'I will send no more'")
        narrator.note("the client can still receive; the server sees EOF")
        stream.send_eof()
        farewell = stream.recv_line(timeout=10)
        say("client", f"recv() -> {farewell!r} (still receiving after our half-close)")
        end = stream.recv(timeout=10)
        say("client", f"recv() -> {end!r}: EOF, the server closed its side too")
    say("client", "close(): the client's socket is released")


class _Answers:
    """A resolver that returns answers already looked up."""

    def __init__(self, infos: list[AddrInfo]) -> None:
        self._infos = infos

    def getaddrinfo(
        self,
        host: str | None,
        port: int,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
        timeout: float | None = None,
    ) -> list[AddrInfo]:
        del host, port, type, flags, timeout
        return [info for info in self._infos if not family or info.family == family]


def _serve_one(
    listener: SocketListener,
    narrator: _Narrator,
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    say = narrator.say
    try:
        connection: SocketStream | None = None
        # Short accept timeouts so a client that failed (stop set) ends the demo at once.
        while connection is None and not stop.is_set():
            try:
                connection = listener.accept(timeout=0.1)
            except TimeoutError:
                continue
        if connection is None:
            return
        with connection:
            say(
                "server",
                "accept() -> a new socket for this connection; the listening socket stays open",
            )
            narrator.note(
                f"socket pair (the 4-tuple): client {connection.remote_address} "
                f"<-> server {connection.local_address}"
            )
            received = connection.recv_line(timeout=10)
            say("server", f"recv() -> {received!r}")
            reply = received.upper() + b"\n"
            say("server", f"send({reply!r})")
            connection.sendall(reply)
            total = len(received) + 1
            while chunk := connection.recv(timeout=10):
                total += len(chunk)
            say("server", "recv() -> b'': EOF, the client half-closed (passive close begins)")
            farewell = b"bye: %d bytes received\n" % total
            say("server", f"send({farewell!r}): sending still works after the client's FIN")
            connection.sendall(farewell)
            say("server", "close(): sends our FIN; the connection is now closed both ways")
    except BaseException as error:  # noqa: BLE001 (handed to the main thread, which raises it)
        errors.append(error)
