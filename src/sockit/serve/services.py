"""The classic Internet test services: echo, discard, chargen and daytime.

Each service comes in three forms with the same behaviour:

* a blocking stream handler, ``handler(stream)``, for :func:`sockit.serve.serve` in the
  ``sequential``, ``thread`` and ``fork`` modes (any
  :class:`~sockit.abc.HalfCloseableStream`: TCP, UNIX, memory pairs);
* an async stream handler, ``await handler(stream)``, for the ``async`` mode (any
  :class:`~sockit.abc.AsyncHalfCloseableStream`, e.g. ``sockit.aio.AsyncSocketStream``);
* a datagram handler, ``handler(data, sender, sock)``, for
  :func:`sockit.serve.serve_udp`.

===========  ========  ====  =====================================================
service      RFC       port  behaviour
===========  ========  ====  =====================================================
echo         RFC 862   7     send back every byte; the client's EOF is echoed too
discard      RFC 863   9     read and throw away until EOF
chargen      RFC 864   19    send the 72-column rotating pattern until the peer leaves
daytime      RFC 867   13    send the date and time as one line, then close
===========  ========  ====  =====================================================

A peer that resets the connection or stops the exchange is the normal end of these
services, not a failure: the handlers then return quietly, so a server does not log a
traceback per impatient client. Errors of this program (a closed stream, a timeout the
server set as an idle limit) still propagate to the server.

This module must never create, accept or close sockets: it only talks over the stream or
datagram socket it is handed (closing it is the server's job).
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import TYPE_CHECKING

from sockit.errors import BrokenResourceError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from sockit.abc import (
        AsyncHalfCloseableStream,
        DatagramSocket,
        HalfCloseableStream,
    )
    from sockit.addr import SocketAddress

__all__ = [
    "CHARGEN_LINE_LENGTH",
    "ECHO_CHUNK",
    "SERVICES",
    "Service",
    "async_chargen",
    "async_daytime",
    "async_discard",
    "async_echo",
    "chargen",
    "chargen_pattern",
    "daytime",
    "daytime_text",
    "discard",
    "echo",
    "udp_chargen",
    "udp_daytime",
    "udp_discard",
    "udp_echo",
]

ECHO_CHUNK = 256 * 1024
"""Bytes asked for per receive by echo and discard. Large enough that one call takes
whatever a fast sender has queued (Linux autotunes loopback receive buffers to several
MiB, and GRO hands over 64 KiB segments), so bulk echo costs few syscalls; a receive of
a small message only returns what arrived."""

CHARGEN_LINE_LENGTH = 72
"""Characters per chargen line before CR LF (RFC 864's "popular pattern")."""

# RFC 864: the 95 printing ASCII characters as a ring "so that character number 0
# follows character number 94"; its example lines start at "!" and wrap round through
# "~" to the space, so the ring is "!" .. "~" followed by " ".
_PRINTING = bytes(range(33, 127)) + b" "
_RING_SIZE = len(_PRINTING)  # 95


def chargen_pattern(lines: int = _RING_SIZE, *, first_line: int = 0) -> bytes:
    """``lines`` lines of the RFC 864 pattern starting at line ``first_line``.

    Line N holds ring characters N .. N+71 (mod 95) followed by CR LF; the pattern
    repeats every 95 lines.
    """
    if lines < 0:
        raise ValueError(f"lines must be >= 0, not {lines}")
    doubled = _PRINTING + _PRINTING
    out = bytearray()
    for number in range(first_line, first_line + lines):
        start = number % _RING_SIZE
        out += doubled[start : start + CHARGEN_LINE_LENGTH]
        out += b"\r\n"
    return bytes(out)


# One full period of the pattern (95 lines, 7030 bytes), and enough whole periods per
# send that a sendall hands the kernel about 64 KiB: few syscalls per MiB, and the
# pattern continues seamlessly from one send to the next.
_CYCLE = chargen_pattern()
_CHARGEN_BLOCK = _CYCLE * max(1, 65536 // len(_CYCLE))
# Two periods back to back, so a datagram of up to 512 bytes starting at any line is
# one slice.
_CYCLE_TWICE = _CYCLE + _CYCLE
_LINE_BYTES = CHARGEN_LINE_LENGTH + 2
# RFC 864, UDP: "a datagram containing a random number (between 0 and 512) of characters".
_UDP_CHARGEN_MAX = 512

# After daytime's line, wait this long at most for the client's EOF before closing,
# like Apache's lingering close (2 s between reads in its http_connection.c): closing a
# socket with unread input sends an RST, which can destroy the reply before the client
# read it. A client that reads the line and closes ends the wait at once.
_LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 1 << 20

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def daytime_text(now: float | None = None) -> bytes:
    """The daytime reply: one line of local time ending in CR LF.

    RFC 867 fixes no syntax and suggests "Weekday, Month Day, Year Time-Zone"; this is
    its example's form, ``Tuesday, February 22, 1982 17:37:43-PST``, with English names
    whatever the locale (the reply is for people and scripts alike).
    """
    local = time.localtime(now)
    zone = local.tm_zone or time.strftime("%z", local)
    return (
        f"{_WEEKDAYS[local.tm_wday]}, {_MONTHS[local.tm_mon - 1]} {local.tm_mday}, "
        f"{local.tm_year} {local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d}-{zone}\r\n"
    ).encode("ascii")


# --- blocking stream handlers ------------------------------------------------------------


def echo(stream: HalfCloseableStream) -> None:
    """RFC 862 echo: send back everything received, in order.

    When the client half-closes, everything it sent has been echoed by the time the
    handler sends its own EOF (``send_eof``) and returns: half-close is propagated, the
    client sees its data followed by EOF. Backpressure is the client's: a client that
    does not read stops the echo (``sendall`` blocks) rather than growing a buffer.
    """
    recv = stream.recv
    sendall = stream.sendall
    try:
        while data := recv(ECHO_CHUNK):
            sendall(data)
        stream.send_eof()
    except (BrokenResourceError, ConnectionError):
        return


def discard(stream: HalfCloseableStream) -> None:
    """RFC 863 discard: read and throw away everything until the client's EOF."""
    recv = stream.recv
    try:
        while recv(ECHO_CHUNK):
            pass
    except (BrokenResourceError, ConnectionError):
        return


def chargen(stream: HalfCloseableStream) -> None:
    """RFC 864 character generator: send the rotating 72-column pattern until the
    client goes away.

    Each ``sendall`` blocks while the client does not read (backpressure; an idle limit
    the server set as the stream's timeout still applies). The client's input is
    ignored, as the RFC says, and never read: its own flow control stops a client that
    sends too much. Returns when the peer closes or resets (``EPIPE``/``ECONNRESET``).
    """
    block = memoryview(_CHARGEN_BLOCK)
    sendall = stream.sendall
    try:
        while True:
            sendall(block)
    except (BrokenResourceError, ConnectionError):
        return


def daytime(stream: HalfCloseableStream) -> None:
    """RFC 867 daytime: send the date and time (:func:`daytime_text`), then EOF.

    Input is thrown away. After its EOF the handler waits briefly (at most 2 s) for the
    client's EOF so the reply is not destroyed by the RST that closing a socket with
    unread input sends.
    """
    try:
        stream.sendall(daytime_text())
        stream.send_eof()
        _discard_until_eof(stream, _LINGER_SECONDS)
    except (BrokenResourceError, ConnectionError):
        return


def _discard_until_eof(stream: HalfCloseableStream, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    received = 0
    while received <= _LINGER_MAX_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            data = stream.recv(ECHO_CHUNK, timeout=remaining)
        except TimeoutError:
            return
        if not data:
            return
        received += len(data)


# --- async stream handlers ---------------------------------------------------------------


async def async_echo(stream: AsyncHalfCloseableStream) -> None:
    """Async twin of :func:`echo`: the same half-close and backpressure behaviour."""
    recv = stream.recv
    sendall = stream.sendall
    try:
        while data := await recv(ECHO_CHUNK):
            await sendall(data)
        await stream.send_eof()
    except (BrokenResourceError, ConnectionError):
        return


async def async_discard(stream: AsyncHalfCloseableStream) -> None:
    """Async twin of :func:`discard`."""
    recv = stream.recv
    try:
        while await recv(ECHO_CHUNK):
            pass
    except (BrokenResourceError, ConnectionError):
        return


async def async_chargen(stream: AsyncHalfCloseableStream) -> None:
    """Async twin of :func:`chargen`: ``await sendall`` waits while the client does not
    read, so a slow reader never makes the server buffer more than one block."""
    block = memoryview(_CHARGEN_BLOCK)
    sendall = stream.sendall
    try:
        while True:
            await sendall(block)
    except (BrokenResourceError, ConnectionError):
        return


async def async_daytime(stream: AsyncHalfCloseableStream) -> None:
    """Async twin of :func:`daytime`."""
    try:
        await stream.sendall(daytime_text())
        await stream.send_eof()
        deadline = time.monotonic() + _LINGER_SECONDS
        received = 0
        while received <= _LINGER_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                data = await stream.recv(ECHO_CHUNK, timeout=remaining)
            except TimeoutError:
                return
            if not data:
                return
            received += len(data)
    except (BrokenResourceError, ConnectionError):
        return


# --- datagram handlers ---------------------------------------------------------------------


def udp_echo(data: bytes, sender: SocketAddress, sock: DatagramSocket) -> None:
    """RFC 862 over UDP: send the datagram back to its sender, unchanged (an empty
    datagram gets an empty reply)."""
    sock.sendto(data, sender)


def udp_discard(data: bytes, sender: SocketAddress, sock: DatagramSocket) -> None:
    """RFC 863 over UDP: ignore the datagram."""
    del data, sender, sock


def udp_chargen(data: bytes, sender: SocketAddress, sock: DatagramSocket) -> None:
    """RFC 864 over UDP: answer each datagram with one datagram of a random length
    between 0 and 512 bytes, cut from the pattern starting at a random line."""
    del data
    # Not for security: the RFC only asks for a varying length. noqa below for that.
    length = random.randint(0, _UDP_CHARGEN_MAX)  # noqa: S311
    start = random.randrange(_RING_SIZE) * _LINE_BYTES  # noqa: S311
    sock.sendto(_CYCLE_TWICE[start : start + length], sender)


def udp_daytime(data: bytes, sender: SocketAddress, sock: DatagramSocket) -> None:
    """RFC 867 over UDP: answer each datagram with one datagram holding the date and
    time (:func:`daytime_text`)."""
    del data
    sock.sendto(daytime_text(), sender)


# --- the registry the CLI and servers look services up in --------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Service:
    """One built-in service in its three forms."""

    name: str
    rfc: int
    well_known_port: int
    stream: Callable[[HalfCloseableStream], None]
    async_stream: Callable[[AsyncHalfCloseableStream], Awaitable[None]]
    datagram: Callable[[bytes, SocketAddress, DatagramSocket], None]


SERVICES: Mapping[str, Service] = {
    service.name: service
    for service in (
        Service("echo", 862, 7, echo, async_echo, udp_echo),
        Service("discard", 863, 9, discard, async_discard, udp_discard),
        Service("chargen", 864, 19, chargen, async_chargen, udp_chargen),
        Service("daytime", 867, 13, daytime, async_daytime, udp_daytime),
    )
}
"""The built-in services by name: ``SERVICES["echo"].stream`` is :func:`echo`."""
