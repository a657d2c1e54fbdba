r"""Telnet negotiation for ``-t/--telnet``: refuse every option, pass the data on.

ncat's ``-t`` "answers Telnet negotiations" so a script can talk to a Telnet server
that opens with option requests. :class:`TelnetFilter` reads what the peer sent and
returns the data for the user with the Telnet commands taken out, plus the replies to
send back. The rules (RFC 854 "Telnet Protocol Specification", RFC 855 "Telnet Option
Specifications", RFC 1143 "The Q Method of Implementing TELNET Option Negotiation"):

* Every option stays off on both sides, the state every Telnet connection starts in:
  ``IAC DO x`` is answered ``IAC WONT x`` and ``IAC WILL x`` is answered ``IAC DONT x``.
  ``IAC DONT x`` and ``IAC WONT x`` ask for what is already the case and get no answer
  (RFC 854: a request to enter a mode one is already in "should not be acknowledged.
  This non-response is essential to prevent endless loops"; RFC 1143 likewise).
* ``IAC IAC`` is one literal 0xFF data byte.
* ``IAC SB ... IAC SE`` (a subnegotiation, RFC 855) is dropped whole. Its parameters are
  discarded as they arrive, never stored, so a peer that never sends ``IAC SE`` costs
  no memory (it only makes the rest of the stream disappear, as RFC 855 says it must).
  Inside it ``IAC IAC`` is a parameter byte; ``IAC`` followed by anything other than
  ``IAC`` or ``SE`` cannot be a parameter, so it ends the subnegotiation and is read as
  that command (a peer that forgot ``IAC SE`` is not muted for ever).
* Every other command (``IAC NOP``, ``GA``, ``DM``, ``AYT``..., ``IAC SE`` outside a
  subnegotiation, and ``IAC`` followed by a byte that is no command) is dropped.

Where ncat 7.93 differs (checked over loopback against the real ncat; ``dotelnet`` in
``ncat_core.c``): it only looks at commands at the very start of each received chunk,
passes the command bytes on to stdout unchanged, also answers ``DONT`` with ``WONT``
and ``WONT`` with ``DONT`` (two ncats would answer each other for ever), and answers
other commands with whatever byte was left in its reply buffer. sockit follows the
RFCs instead; the replies it sends are the ones ncat sends for ``DO`` and ``WILL``.

Streaming: commands split across chunks anywhere are handled; feeding a stream in any
chunking gives the same concatenated data and replies as feeding it whole. Memory is
O(1) between calls, and over a whole stream the data plus the replies are never more
bytes than were fed (a refusal is as long as the request it answers).

This module must never do I/O: no socket, selector, thread, asyncio or clock; it is
bytes in, bytes out.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["DO", "DONT", "IAC", "SB", "SE", "WILL", "WONT", "TelnetFilter"]

# RFC 854, "TELNET COMMAND STRUCTURE".
IAC: Final = 255
DONT: Final = 254
DO: Final = 253
WONT: Final = 252
WILL: Final = 251
SB: Final = 250
SE: Final = 240

_IAC_BYTE: Final = bytes([IAC])
_NEGOTIATIONS: Final = frozenset({DO, DONT, WILL, WONT})
# What we answer each request with: never enabling anything (RFC 1143, "us=NO" and
# "him=NO" are the only states this side ever holds). None: no answer.
_REFUSALS: Final[dict[int, int | None]] = {DO: WONT, WILL: DONT, DONT: None, WONT: None}


class _State(Enum):
    DATA = auto()
    COMMAND = auto()  # after IAC
    OPTION = auto()  # after IAC DO/DONT/WILL/WONT, waiting for the option code
    SUBNEGOTIATION = auto()  # after IAC SB, dropping parameters
    SUBNEGOTIATION_COMMAND = auto()  # after IAC inside a subnegotiation


class TelnetFilter:
    """Separates Telnet commands from data and refuses every option.

    Feed it each chunk received from the peer; see the module docstring for the rules.
    """

    __slots__ = ("_state", "_verb")

    def __init__(self) -> None:
        self._state = _State.DATA
        self._verb = 0

    @property
    def at_boundary(self) -> bool:
        """True when no command or subnegotiation is unfinished.

        At EOF, False means the peer stopped inside a command: nothing is lost, since
        a command is never data (a literal 0xFF is sent as ``IAC IAC``).
        """
        return self._state is _State.DATA

    def feed(self, data: Buffer) -> tuple[bytes, bytes]:
        """Take the next chunk from the peer; return ``(data, replies)``.

        ``data`` is what to pass on to the user, commands removed; ``replies`` is what
        to send back to the peer (refusals, possibly ``b""``), to be sent in order with
        the replies of earlier calls. ``b""`` in gives ``(b"", b"")``; this method never
        raises for any input. Both results are together at most ``len(data) + 2``
        bytes (a request split before its option byte is answered when that byte
        comes).
        """
        chunk = bytes(data)
        if self._state is _State.DATA and IAC not in chunk:
            return chunk, b""
        user = bytearray()
        replies = bytearray()
        position = 0
        length = len(chunk)
        while position < length:
            state = self._state
            if state is _State.DATA:
                # Copy the run of plain data up to the next IAC in one slice.
                end = chunk.find(_IAC_BYTE, position)
                if end < 0:
                    user += chunk[position:]
                    break
                user += chunk[position:end]
                self._state = _State.COMMAND
                position = end + 1
                continue
            if state is _State.SUBNEGOTIATION:
                end = chunk.find(_IAC_BYTE, position)
                if end < 0:
                    break
                self._state = _State.SUBNEGOTIATION_COMMAND
                position = end + 1
                continue
            byte = chunk[position]
            position += 1
            if state is _State.OPTION:
                refusal = _REFUSALS[self._verb]
                if refusal is not None:
                    replies += bytes((IAC, refusal, byte))
                self._state = _State.DATA
            elif state is _State.SUBNEGOTIATION_COMMAND and byte == IAC:
                self._state = _State.SUBNEGOTIATION
            elif state is _State.SUBNEGOTIATION_COMMAND and byte == SE:
                self._state = _State.DATA
            else:
                # After IAC, in data or (ending it) in a subnegotiation.
                self._command(byte, user)
        return bytes(user), bytes(replies)

    def _command(self, byte: int, user: bytearray) -> None:
        """Act on the byte after an IAC (outside a subnegotiation, or ending one)."""
        if byte == IAC:
            user.append(IAC)
            self._state = _State.DATA
        elif byte in _NEGOTIATIONS:
            self._verb = byte
            self._state = _State.OPTION
        elif byte == SB:
            self._state = _State.SUBNEGOTIATION
        else:
            self._state = _State.DATA
