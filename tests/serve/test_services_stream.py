"""The built-in services as blocking stream handlers, over real TCP and UNIX sockets.

Each test runs the handler on the server side of one real connection (a plain
``listen``/``accept`` in a thread) and checks what a client sees: data, EOF, the
RFC 864 pattern, the RFC 867 line, and a quiet end when the client goes away.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from typing import TYPE_CHECKING

import pytest

import sockit
from sockit.serve import services
from sockit.serve.services import (
    CHARGEN_LINE_LENGTH,
    SERVICES,
    chargen_pattern,
    daytime_text,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from sockit.abc import HalfCloseableStream

TIMEOUT = 10.0


class ServedOnce:
    """One connection served by ``handler`` in a thread; the outcome is recorded."""

    def __init__(self, handler: Callable[[sockit.SocketStream], None]) -> None:
        self.handler = handler
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, listener: sockit.SocketListener) -> None:
        try:
            with listener.accept(timeout=TIMEOUT) as stream:
                self.handler(stream)
        except BaseException as error:  # handed to the test, which re-raises
            self.error = error
        finally:
            self.done.set()


@contextlib.contextmanager
def serve_once(
    handler: Callable[[sockit.SocketStream], None], *, unix_path: str | None = None
) -> Iterator[tuple[ServedOnce, Callable[[], sockit.SocketStream]]]:
    """Yield (outcome, connect) for one connection served by ``handler``."""
    listener = sockit.listen_unix(unix_path) if unix_path else sockit.listen(0, "127.0.0.1")
    served = ServedOnce(handler)
    thread = threading.Thread(target=served.run, args=(listener,))
    thread.start()

    def connect() -> sockit.SocketStream:
        if unix_path:
            return sockit.connect_unix(unix_path, timeout=TIMEOUT)
        return sockit.connect("127.0.0.1", listener.port, timeout=TIMEOUT)

    try:
        yield served, connect
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert not thread.is_alive()


def receive_all(stream: HalfCloseableStream) -> bytes:
    out = bytearray()
    while chunk := stream.recv(1 << 20, timeout=TIMEOUT):
        out += chunk
    return bytes(out)


def send_in_thread(stream: HalfCloseableStream, data: bytes) -> threading.Thread:
    """Send ``data`` then EOF from a thread (so the test can read concurrently)."""

    def send() -> None:
        stream.sendall(data, timeout=TIMEOUT)
        stream.send_eof()

    thread = threading.Thread(target=send)
    thread.start()
    return thread


# --- echo -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_echo_returns_everything_then_propagates_eof(transport: str, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    unix_path = str(tmp_path / "echo.sock") if transport == "unix" else None
    with serve_once(services.echo, unix_path=unix_path) as (served, connect):
        with connect() as client:
            sender = send_in_thread(client, data)
            received = receive_all(client)  # ends with EOF: the half-close came back
            sender.join(TIMEOUT)
        assert served.done.wait(TIMEOUT)
    assert served.error is None
    assert received == data


def test_echo_answers_each_message_before_eof() -> None:
    with serve_once(services.echo) as (served, connect), connect() as client:
        for message in (b"a", b"hello\n", b"x" * 1000):
            client.sendall(message)
            assert client.recv_exactly(len(message), timeout=TIMEOUT) == message
        client.send_eof()
        assert client.recv(timeout=TIMEOUT) == b""
    assert served.error is None


def test_echo_ends_quietly_when_the_client_resets() -> None:
    with serve_once(services.echo) as (served, connect):
        with connect() as client:
            client.sendall(b"ping")
            assert client.recv_exactly(4, timeout=TIMEOUT) == b"ping"
            client.sendall(b"unread by us")
            client.abort()  # RST
        assert served.done.wait(TIMEOUT)
    assert served.error is None


# --- discard ------------------------------------------------------------------------------


def test_discard_reads_everything_and_sends_nothing() -> None:
    data = os.urandom(2 << 20)
    with serve_once(services.discard) as (served, connect), connect() as client:
        client.sendall(data, timeout=TIMEOUT)
        client.send_eof()
        # The handler returns at our EOF and the server closes: EOF, no byte before it.
        assert client.recv(timeout=TIMEOUT) == b""
    assert served.error is None


# --- chargen ------------------------------------------------------------------------------


def test_chargen_pattern_is_the_rfc_864_one() -> None:
    lines = chargen_pattern(96).split(b"\r\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert len(lines) == 96
    assert all(len(line) == CHARGEN_LINE_LENGTH for line in lines)
    # RFC 864's example, first lines and the wrap round "~" to the space.
    assert lines[0] == b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh"
    assert lines[1] == b"\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi"
    assert lines[94].startswith(b' !"#')
    assert lines[95] == lines[0]  # the ring has 95 characters
    assert lines[39].startswith(b"HIJ")
    assert lines[39].endswith(b"~ !\"#$%&'()*+,-./0")
    assert chargen_pattern(3, first_line=95) == chargen_pattern(3)
    with pytest.raises(ValueError):
        chargen_pattern(-1)


def test_chargen_streams_the_pattern_until_the_client_leaves() -> None:
    size = 300_000  # several periods and several sendall blocks
    with serve_once(services.chargen) as (served, connect):
        with connect() as client:
            received = client.recv_exactly(size, timeout=TIMEOUT)
        # Our close with unread data sends an RST; the handler's next send fails and
        # it returns quietly.
        assert served.done.wait(TIMEOUT)
    assert served.error is None
    period = chargen_pattern()
    expected = period * (size // len(period) + 1)
    assert received == expected[:size]


def test_chargen_respects_backpressure() -> None:
    """A client that does not read blocks chargen's sendall (it does not buffer)."""

    def limited(stream: sockit.SocketStream) -> None:
        stream.timeout = 0.5  # the idle limit a server would set
        services.chargen(stream)

    with serve_once(limited) as (served, connect), connect() as client:
        assert served.done.wait(TIMEOUT)
        # The kernel buffers are full and nothing was read: the send timed out.
        assert isinstance(served.error, TimeoutError)
        # Everything that was sent is the pattern, in order.
        period = chargen_pattern()
        first = client.recv_exactly(len(period) * 2, timeout=TIMEOUT)
        assert first == period * 2


# --- daytime ------------------------------------------------------------------------------

DAYTIME = re.compile(
    rb"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rb"(January|February|March|April|May|June|July|August|September|October|November|December)"
    rb" ([1-9]|[12][0-9]|3[01]), ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2})-(\S+)\r\n"
)


def test_daytime_text_is_rfc_867_example_form() -> None:
    now = time.time()
    text = daytime_text(now)
    match = DAYTIME.fullmatch(text)
    assert match is not None, text
    local = time.localtime(now)
    assert int(match[4]) == local.tm_year
    assert int(match[3]) == local.tm_mday
    assert (int(match[5]), int(match[6]), int(match[7])) == (
        local.tm_hour,
        local.tm_min,
        local.tm_sec,
    )


def test_daytime_sends_one_line_then_eof() -> None:
    before = time.time()
    with serve_once(services.daytime) as (served, connect), connect() as client:
        reply = receive_all(client)
    after = time.time()
    assert served.error is None
    assert DAYTIME.fullmatch(reply) is not None, reply
    assert reply in {daytime_text(before), daytime_text(after), daytime_text((before + after) / 2)}


def test_daytime_reply_survives_unread_client_input() -> None:
    """The client's input is thrown away without an RST destroying the reply."""
    with serve_once(services.daytime) as (served, connect), connect() as client:
        client.sendall(b"x" * 100_000)
        line = client.recv_until(b"\r\n", max_bytes=200, timeout=TIMEOUT)
        assert DAYTIME.fullmatch(line + b"\r\n") is not None
        assert client.recv(timeout=TIMEOUT) == b""
        client.send_eof()
        assert served.done.wait(TIMEOUT)
    assert served.error is None


def test_registry_names_every_service_in_three_forms() -> None:
    assert set(SERVICES) == {"echo", "discard", "chargen", "daytime"}
    assert SERVICES["echo"].stream is services.echo
    assert SERVICES["echo"].async_stream is services.async_echo
    assert SERVICES["echo"].datagram is services.udp_echo
    assert {s.rfc for s in SERVICES.values()} == {862, 863, 864, 867}
    assert {s.well_known_port for s in SERVICES.values()} == {7, 9, 19, 13}
