r"""The hex dump of session data that ``ncat -x FILE`` writes, byte for byte.

ncat (7.93, ``ncat_core.c``) logs every chunk it sends or receives by writing
``hexdump(chunk)`` from nbase (``nbase_misc.c``) to the file; :class:`HexDumper`
produces the same text. The layout, checked against the real ncat 7.93 over loopback
(see ``tests/proto/test_hexdump.py``)::

    0000   48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 20 74 68  Hello,.world!.th
    0010   69 73 0a                                          is.

* One line per 16 bytes, always 73 characters plus ``"\n"`` (a short last line is
  padded with spaces to the full width).
* Columns 0-3: the offset of the line's first byte *within the chunk*, four lower-case
  hex digits. **The offset restarts at 0000 for every chunk**: ncat dumps each
  ``recv``/``send`` separately, so the file shows the chunking. nbase computes it as
  ``(16 * line) % 0xFFFF`` (sic: 0xFFFF, not 0x10000), which is reproduced even though
  ncat, reading at most 8 KiB per call, never reaches it.
* Columns 7-56 (50 wide, space-padded): each byte as two lower-case hex digits and a
  space, with one extra space after the eighth byte. Columns 4-6 are spaces.
* Columns 57-72: the bytes as characters; bytes 0x21 to 0x7e print as themselves,
  everything else (space, control characters, DEL, 0x80-0xff) as ``"."``. (nbase keeps
  ``isalnum || ispunct``; ncat never calls ``setlocale``, so that is the C locale.)
* No header, direction marker or timestamp: ncat's own comment says "Currently the log
  formats don't distinguish sends and receives", so sent and received chunks look the
  same and ``direction`` is accepted only so callers state it (and for a future format).
* Nothing is written at the end of a session; an empty chunk writes nothing.

Streaming: because ncat's offsets restart per chunk, the text depends on how the
stream was cut into chunks, by design, and cannot be the same for a split and an
unsplit sequence. What holds for any chunking (and is property-tested) is that the dump
of a sequence of chunks is the concatenation of the dumps of each chunk (no state is
carried between calls), and that the bytes read back from the dump are exactly the
stream.

This module must never do I/O: no socket, selector, thread, asyncio, file or clock; it
is bytes in, text out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, TypeAlias

if TYPE_CHECKING:
    from sockit.abc import Buffer

__all__ = ["BYTES_PER_LINE", "LINE_WIDTH", "Direction", "HexDumper", "hexdump"]

Direction: TypeAlias = Literal["sent", "received"]
"""Which way a chunk went, from this side's point of view."""

BYTES_PER_LINE: Final = 16
LINE_WIDTH: Final = 74
"""Characters per dump line, the ``"\\n"`` included (nbase's ``LINE_LEN``)."""

_DIRECTIONS: Final = frozenset({"sent", "received"})
# nbase's HEX_START is 7 and ASC_START 57: the hex column is 50 characters wide.
_HEX_COLUMN_WIDTH: Final = 50
# nbase wraps the offset modulo 0xFFFF (not 0x10000); kept so the text is identical.
_OFFSET_MODULUS: Final = 0xFFFF
# isalnum(c) || ispunct(c) in the C locale: the graphic ASCII characters.
_PRINTABLE: Final = bytes(byte if 0x21 <= byte <= 0x7E else 0x2E for byte in range(256))


def hexdump(data: Buffer) -> str:
    """Return ncat's hex dump of one chunk (``""`` for an empty chunk)."""
    chunk = bytes(data)
    if not chunk:
        return ""
    characters = chunk.translate(_PRINTABLE).decode("ascii")
    lines: list[str] = []
    for line_number, start in enumerate(range(0, len(chunk), BYTES_PER_LINE)):
        piece = chunk[start : start + BYTES_PER_LINE]
        hex_digits = piece[:8].hex(" ")
        if len(piece) > 8:
            hex_digits += "  " + piece[8:].hex(" ")
        offset = (BYTES_PER_LINE * line_number) % _OFFSET_MODULUS
        text = characters[start : start + BYTES_PER_LINE]
        lines.append(f"{offset:04x}   {hex_digits:<{_HEX_COLUMN_WIDTH}}{text:<{BYTES_PER_LINE}}\n")
    return "".join(lines)


class HexDumper:
    """Turns each chunk of a session into the text ncat appends to its ``-x`` file.

    Stateless by nature (ncat's offsets restart with every chunk); it is a class so the
    CLI holds one object per log file and so a future format that needs state (such as
    running offsets) does not change the callers.
    """

    __slots__ = ()

    def feed(self, data: Buffer, direction: Direction) -> str:
        """Return the text to append to the hex dump file for one chunk.

        ``data`` is exactly what one ``recv`` returned or one ``send`` sent: the chunk
        boundaries are visible in the output, as in ncat's. ``b""`` gives ``""``. The
        text is pure ASCII (write it encoded as ASCII). ``direction`` does not change
        the output (ncat does not distinguish sends from receives) but must be
        ``"sent"`` or ``"received"``: anything else raises ``ValueError``.
        """
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'sent' or 'received', not {direction!r}")
        return hexdump(data)

    def finish(self) -> str:
        """Return the text to write when the session ends: always ``""``.

        ncat writes no trailer, and :meth:`feed` never holds anything back.
        Idempotent; :meth:`feed` may still be called afterwards.
        """
        return ""
