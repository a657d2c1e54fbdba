"""ReceiveBuffer: the bytes a stream received but nobody asked for yet, with limits.

Every message helper of every stream (``recv_exactly``, ``recv_until``, ``recv_line``
and the framing decoders) keeps its leftovers here, so sync, async, TLS and memory
streams share one implementation of the hard parts: limits, no quadratic rescans, and
no lost bytes when a caller gives up (timeout, limit) half way.

Costs are linear in the bytes fed: a delimiter search resumes where the previous one
stopped (h11's ``_receivebuffer.py`` does the same), and lines are split a whole chunk at
a time with ``bytes.split`` so a stream of short lines costs one C call per chunk, not a
Python loop per byte. This is what lets ``recv_line`` keep up with the C implementation
of ``socket.makefile().readline``.

This module must never do I/O: no socket, selector, thread, asyncio or sleep.
"""

from __future__ import annotations

from sockit.errors import LimitExceeded

__all__ = ["ReceiveBuffer"]

_NEWLINE = b"\n"


class ReceiveBuffer:
    """An unbounded-by-itself FIFO of bytes with bounded message extraction.

    The buffer never refuses :meth:`feed`; the *reader* bounds memory by asking for
    messages with a ``max_bytes`` and stopping its reads when :meth:`take_until` or
    :meth:`take_line` raise :class:`~sockit.LimitExceeded`. After that error the bytes
    are still buffered (nothing is lost), so the caller can decide what to do.

    Internally the unread bytes are ``lines`` (complete lines already split, in reverse
    order so the next one is ``lines[-1]``) followed by ``_rest``. ``lines`` is only
    non-empty after :meth:`take_line` split a chunk. :meth:`take_some` and
    :meth:`take_exactly` take their bytes from ``lines`` directly, so a protocol that
    alternates a header line and a raw body stays linear; other reads first join the
    lines back (rare: a switch to another delimiter, or :meth:`unread`).
    """

    __slots__ = ("_rest", "_scan_delimiter", "_scanned", "lines")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        """Complete lines (without ``\\n``) ready to hand out, next one last.

        Public so a stream's ``recv_line`` may pop from it directly on its hot path;
        nothing else may modify it.
        """
        self._rest = bytearray()
        # How many bytes at the start of _rest were already searched for
        # _scan_delimiter without finding it, so the next search resumes there instead
        # of rescanning (quadratic when a long message arrives in small pieces).
        self._scanned = 0
        self._scan_delimiter = _NEWLINE

    def __len__(self) -> int:
        """Number of unread bytes (O(number of pre-split lines))."""
        return len(self._rest) + sum(len(line) + 1 for line in self.lines)

    def __bool__(self) -> bool:
        return bool(self.lines) or bool(self._rest)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (amortised O(len(data)))."""
        self._rest += data

    # --- raw access ---------------------------------------------------------------

    def take_some(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` bytes from the front (``b""`` if empty)."""
        if self.lines:
            head = self._take_from_lines(max_bytes)
            if self.lines or len(head) >= max_bytes:
                return head
            return head + self.take_some(max_bytes - len(head))
        rest = self._rest
        if len(rest) <= max_bytes:
            data = bytes(rest)
            rest.clear()
        else:
            data = bytes(rest[:max_bytes])
            del rest[:max_bytes]
        self._scanned = 0
        return data

    def take_all(self) -> bytes:
        """Remove and return every buffered byte."""
        if self.lines:
            self._unsplit()
        data = bytes(self._rest)
        self._rest.clear()
        self._scanned = 0
        return data

    def take_exactly(self, n: int) -> bytes | None:
        """Remove and return exactly ``n`` bytes, or return ``None`` (and keep
        everything) if fewer than ``n`` are buffered."""
        if self.lines:
            if self._lines_hold(n):
                return self._take_from_lines(n)
            # Fewer than n bytes are pre-split, so joining them back costs less than
            # the n bytes this read waits for (and later attempts find no lines).
            self._unsplit()
        rest = self._rest
        if len(rest) < n:
            return None
        data = bytes(rest[:n])
        del rest[:n]
        self._scanned = 0
        return data

    def unread(self, data: bytes) -> None:
        """Put ``data`` back at the front, e.g. a partial message handed to a caller
        that decided not to consume it."""
        if not data:
            return
        if self.lines:
            self._unsplit()
        self._rest[:0] = data
        self._scanned = 0

    # --- delimited messages -------------------------------------------------------

    def take_until(self, delimiter: bytes, max_bytes: int) -> bytes | None:
        """Remove and return the bytes before the next ``delimiter`` (which is removed
        too), or ``None`` if no complete message is buffered yet.

        Raises :class:`~sockit.LimitExceeded` if ``max_bytes + len(delimiter)`` bytes
        are buffered and the delimiter does not start within the first ``max_bytes + 1``
        positions: a message longer than ``max_bytes`` can never be returned. The bytes
        stay buffered.
        """
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if delimiter == _NEWLINE:
            # Lines have a faster path that splits a whole chunk at a time.
            return self.take_line(max_bytes)
        if self.lines:
            self._unsplit()
        rest = self._rest
        if delimiter != self._scan_delimiter:
            self._scan_delimiter = delimiter
            self._scanned = 0
        # Resume the search where the last one stopped; back up len-1 bytes because a
        # delimiter may straddle the old end of the buffer.
        start = max(0, self._scanned - len(delimiter) + 1)
        index = rest.find(delimiter, start, max_bytes + len(delimiter))
        if index < 0:
            if len(rest) >= max_bytes + len(delimiter):
                raise LimitExceeded(
                    f"no {delimiter!r} within {max_bytes} bytes (max_bytes={max_bytes})"
                )
            self._scanned = len(rest)
            return None
        message = bytes(rest[:index])
        del rest[: index + len(delimiter)]
        self._scanned = 0
        return message

    def take_line(self, max_bytes: int) -> bytes | None:
        """Remove and return the next line without its ``b"\\n"``, or ``None`` if no
        complete line is buffered. ``max_bytes`` bounds the line (without ``\\n``); a
        longer line raises :class:`~sockit.LimitExceeded` and stays buffered."""
        lines = self.lines
        if lines:
            line = lines.pop()
            if len(line) <= max_bytes:
                return line
            lines.append(line)
            raise LimitExceeded(f"line longer than max_bytes={max_bytes}")
        return self._split_lines(max_bytes)

    def feed_and_take_line(self, data: bytes, max_bytes: int) -> bytes | None:
        """Exactly ``feed(data)`` then ``take_line(max_bytes)``, with fewer copies.

        The hot path of ``recv_line``: when the buffer holds at most a partial line
        (the usual state after ``take_line`` returned ``None``), ``data`` is split where
        it is instead of being copied into the buffer and out again, so a received chunk
        is touched once. That keeps ``recv_line`` cache-friendly enough to outrun the C
        ``BufferedReader.readline`` of ``socket.makefile``.
        """
        rest = self._rest
        if (
            self.lines
            or type(data) is not bytes
            or self._scan_delimiter != _NEWLINE
            or self._scanned != len(rest)
        ):
            self.feed(data)
            return self.take_line(max_bytes)
        last = data.rfind(_NEWLINE)
        if last < 0:
            rest += data
            if len(rest) > max_bytes:
                raise LimitExceeded(f"no newline within {max_bytes} bytes")
            self._scanned = len(rest)
            return None
        lines = data.split(_NEWLINE)
        tail = lines.pop()  # the bytes after the last newline: a partial line or b""
        if rest:
            lines[0] = bytes(rest) + lines[0]
            rest.clear()
        first = lines[0]
        if len(first) > max_bytes:
            # Undo: put everything back in order, as feed() would have left it.
            rest += _NEWLINE.join(lines)
            rest += _NEWLINE
            rest += tail
            self._scanned = 0
            raise LimitExceeded(f"line longer than max_bytes={max_bytes}")
        rest += tail
        self._scanned = len(rest)
        lines.reverse()
        lines.pop()
        # Keep the same list object: a stream may hold a reference to it.
        self.lines[:] = lines
        return first

    def _split_lines(self, max_bytes: int) -> bytes | None:
        rest = self._rest
        if self._scan_delimiter != _NEWLINE:
            self._scan_delimiter = _NEWLINE
            self._scanned = 0
        index = rest.find(_NEWLINE, self._scanned)
        if index < 0:
            if len(rest) > max_bytes:
                raise LimitExceeded(f"no newline within {max_bytes} bytes")
            self._scanned = len(rest)
            return None
        if index > max_bytes:
            raise LimitExceeded(f"line longer than max_bytes={max_bytes}")
        last = rest.rfind(_NEWLINE)
        if last == index:
            # One complete line: no need to split a block.
            line = bytes(rest[:index])
            del rest[: index + 1]
            self._scanned = 0
            return line
        # Split every complete line of the buffer in one C call; the rest stays.
        with memoryview(rest) as view:
            block = bytes(view[:last])
        del rest[: last + 1]
        self._scanned = 0
        lines = block.split(_NEWLINE)
        lines.reverse()
        first = lines.pop()
        # Keep the same list object: a stream may hold a reference to it.
        self.lines[:] = lines
        return first

    def _lines_hold(self, n: int) -> bool:
        """Whether the pre-split lines hold ``n`` bytes; looks at no more lines than
        needed."""
        for line in reversed(self.lines):
            n -= len(line) + 1
            if n <= 0:
                return True
        return n <= 0

    def _take_from_lines(self, n: int) -> bytes:
        """Remove and return up to ``n`` bytes from the pre-split lines; a line taken
        in part leaves its tail as the next line (it still ends with a newline)."""
        lines = self.lines
        pieces: list[bytes] = []
        while lines and n > 0:
            line = lines.pop()
            if len(line) < n:
                pieces.append(line)
                pieces.append(_NEWLINE)
                n -= len(line) + 1
            else:
                pieces.append(line[:n])
                lines.append(line[n:])
                n = 0
        return b"".join(pieces)

    def _unsplit(self) -> None:
        lines = self.lines[::-1]  # stream order
        lines.append(b"")  # so the join ends with a newline
        self._rest[:0] = _NEWLINE.join(lines)
        self.lines.clear()
        self._scanned = 0
