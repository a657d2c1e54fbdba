r"""CRLF line ends for ``-C/--crlf``: every LF we send gets a CR before it.

ncat's ``-C`` ("Use CRLF for EOL sequence"; the man page: "convert LF line endings to
CRLF when taking input from standard input") is for talking to servers of the
plain-text protocols that end lines with CRLF (SMTP, RFC 5321 section 2.3.8; HTTP/1.1,
RFC 9112 section 2.2; POP3, IMAP, FTP control) from a terminal or a file that ends
lines with LF only.

The rule, checked against the real ncat 7.93 over loopback (``fix_line_endings`` in
ncat's ``util.c``): an LF not directly preceded by a CR becomes CRLF; an LF already
preceded by a CR (CRLF) is left alone, also when the CR ended the previous chunk; a CR
on its own is left alone. So ``"a\n"`` -> ``"a\r\n"``, ``"a\r\n"`` -> ``"a\r\n"``,
``"\r\r\n"`` -> ``"\r\r\n"``, ``"a\rb"`` -> ``"a\rb"``, ``"\n\n"`` -> ``"\r\n\r\n"``.

Streaming: the only state is "the last byte fed was a CR", so any chunking of a stream
gives exactly the output of the whole stream at once, and nothing is ever held back
(there is no flush at EOF). Memory is O(1) between calls.

This module must never do I/O: no socket, selector, thread, asyncio or clock; it is
bytes in, bytes out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["CrlfEncoder"]

_CR: Final = b"\r"
_LF: Final = b"\n"
_CRLF: Final = b"\r\n"


def _to_crlf(data: bytes) -> bytes:
    # Two C-speed passes: CRLF -> LF, then LF -> CRLF, give every LF exactly one CR
    # before it while keeping every other CR (a CR before a CR stays: "\r\r\n").
    return data.replace(_CRLF, _LF).replace(_LF, _CRLF)


class CrlfEncoder:
    """Turns LF into CRLF in a byte stream to be sent, chunk by chunk.

    See the module docstring for the rule. One encoder per outgoing stream.
    """

    __slots__ = ("_after_cr",)

    def __init__(self) -> None:
        self._after_cr = False

    def feed(self, data: Buffer) -> bytes:
        """Return ``data`` with each LF that has no CR before it turned into CRLF.

        "Before it" reaches back into the previous call, so the concatenated results
        do not depend on how the stream was cut. ``b""`` gives ``b""`` and changes
        nothing. Never raises for any input; the result is at most twice as long.
        """
        chunk = bytes(data)
        if not chunk:
            return b""
        after_cr = self._after_cr
        self._after_cr = chunk.endswith(_CR)
        if after_cr and chunk.startswith(_LF):
            return _LF + _to_crlf(chunk[1:])
        return _to_crlf(chunk)
